"""The local SparkSession's Python workers run the project's interpreter, not the first python3 on the PATH."""

import sys

from pyspark.sql.functions import udf


def test_python_workers_run_this_interpreter_and_its_packages(spark):
    def where(_):
        import sys as worker_sys

        return worker_sys.prefix

    prefix = spark.range(1).select(udf(where, "string")("id")).first()[0]
    assert prefix == sys.prefix  # the virtualenv, with pandas, pyarrow and the project installed
