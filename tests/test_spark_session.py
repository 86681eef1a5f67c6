"""The local SparkSession's Python workers run the project's interpreter, not the first python3 on the PATH."""

import sys

from pyspark.sql.functions import udf


def test_python_workers_run_this_interpreter_and_its_packages(spark):
    def where(_):
        import sys as worker_sys

        return worker_sys.prefix

    prefix = spark.range(1).select(udf(where, "string")("id")).first()[0]
    assert prefix == sys.prefix  # the virtualenv, with pandas, pyarrow and the project installed


def test_the_jvm_console_goes_to_the_spark_log_not_the_terminal(tmp_path):
    """A command's terminal holds only our lines: the JDK's start-up warning and Spark's log-level notice go to
    SERM_HOME/logs/spark.log, and the session works."""
    import os
    import subprocess

    script = ("from serm_dagster.resources import build_spark_session; "
              "print(build_spark_session('local[1]', app_name='quiet').range(3).count())")
    env = {**os.environ, "SERM_HOME": str(tmp_path / "home"), "SERM_SPARK_DRIVER_MEMORY": "512m"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "3"
    assert "WARNING" not in done.stderr and "log level" not in done.stderr, done.stderr
    assert (tmp_path / "home" / "logs" / "spark.log").exists()
