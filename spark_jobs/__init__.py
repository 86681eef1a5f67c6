"""Plain data transformations, one module per stage. Spark functions take and return DataFrames."""
