from pathlib import Path

import pytest
from click.testing import CliRunner

from jobs.cli import cli
from jobs.config import ConfigError, load_config
from jobs.submit import JOBS_DIR


def test_defaults_serve_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MILLPOND_LAKEHOUSE", raising=False)
    monkeypatch.delenv("MILLPOND_CONFIG", raising=False)
    config = load_config()
    assert config.file is None
    assert config.lakehouse == tmp_path / "lakehouse"
    assert config.values["spark"]["master"] == "local[*]"


def test_file_then_env_then_flag(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "millpond.toml").write_text(
        'lakehouse = "from-file"\n[spark]\nshuffle_partitions = 3\n[spark.conf]\n"spark.x" = 1\n'
    )
    config = load_config()
    assert config.lakehouse == tmp_path / "from-file"
    assert config.values["spark"]["shuffle_partitions"] == 3
    assert config.values["spark"]["conf"] == {"spark.x": "1"}
    monkeypatch.setenv("MILLPOND_LAKEHOUSE", str(tmp_path / "from-env"))
    assert load_config().lakehouse == tmp_path / "from-env"
    assert load_config(lakehouse=tmp_path / "from-flag").lakehouse == tmp_path / "from-flag"


def test_unknown_or_mistyped_settings_are_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[spark]\nmastr = 'local[1]'\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown setting 'spark.mastr'"):
        load_config(bad)
    bad.write_text("[ingest]\nmax_record_bytes = 'big'\n")
    with pytest.raises(ConfigError, match="'ingest.max_record_bytes' must be int"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.toml")


def test_config_command_prints_effective_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tomllib

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MILLPOND_LAKEHOUSE", raising=False)
    monkeypatch.delenv("MILLPOND_CONFIG", raising=False)
    result = CliRunner().invoke(cli, ["--lakehouse", "lh", "config"])
    assert result.exit_code == 0, result.output
    printed = tomllib.loads(result.output)
    assert printed["lakehouse"] == str(tmp_path / "lh")
    assert printed["ingest"]["max_record_bytes"] > 0


def test_every_command_has_help() -> None:
    runner = CliRunner()
    for command in ["config", "tables", "ingest", "quarantine", "runs", "submit", "demo", "serve", "preferences",
                    "stream"]:  # fmt: skip
        result = runner.invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output, command


def test_submit_dry_run_ships_project_and_delta(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "--lakehouse",
            str(tmp_path / "lh"),
            "submit",
            "ingest",
            "--master",
            "spark://127.0.0.1:7077",
            "--conf",
            "spark.executor.memory=2g",
            "--dry-run",
            "--",
            "--manifest",
            "m.toml",
        ],
    )
    assert result.exit_code == 0, result.output
    command = result.output.split()
    assert command[command.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert command[command.index("--py-files") + 1].endswith(".zip")
    assert any(c.startswith("spark.jars.packages=io.delta:delta-spark") for c in command)
    assert "spark.executor.memory=2g" in command
    assert command[-5:] == [str(JOBS_DIR / "ingest.py"), "--lakehouse", str(tmp_path / "lh"), "--manifest", "m.toml"]
    unknown = runner.invoke(cli, ["submit", "nope", "--master", "local[1]", "--dry-run"])
    assert unknown.exit_code != 0 and "unknown job 'nope'" in str(unknown.exception)


def test_a_group_job_file_takes_the_options_submit_puts_first(tmp_path: Path) -> None:
    """`millpond submit snapshot -- list` runs `jobs/snapshot.py --lakehouse LH list`."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(JOBS_DIR / "snapshot.py"), "--lakehouse", str(tmp_path / "lh"), "list"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0 and "no snapshots yet" in done.stdout, done.stderr[-2000:]


def test_curate_sections_are_checked_and_open_tables_take_new_keys(tmp_path) -> None:
    from curation.quality import QualityParams
    from jobs.config import params_from

    good = tmp_path / "good.toml"
    good.write_text(
        "[curate.quality.rules.chat]\nmin_word_count = 3\n[curate.license.purposes]\nresearch = ['MIT']\n"
        "[curate.language]\nmin_score = 1\n"
    )
    config = load_config(good)
    quality = params_from(QualityParams, config.section("curate")["quality"])
    assert quality.rules_for("chat") == {"min_word_count": 3}
    assert config.section("curate")["license"]["purposes"]["research"] == ["MIT"]
    assert config.section("curate")["language"]["min_score"] == 1.0
    bad = tmp_path / "bad.toml"
    bad.write_text("[curate.quality.rules.web]\nmin_wordcount = 3\n")
    with pytest.raises(ConfigError, match="curate.quality.rules.web.min_wordcount"):
        load_config(bad)
    worse = tmp_path / "worse.toml"
    worse.write_text("[curate.quality.rules.chat]\nmin_wordcount = 3\n")
    with pytest.raises(ConfigError, match="unknown rule 'min_wordcount'"):
        params_from(QualityParams, load_config(worse).section("curate")["quality"])


def test_no_job_file_hides_a_package_under_spark_submit() -> None:
    """spark-submit puts `jobs/` first on sys.path: `jobs/lineage.py` would shadow `lineage`."""
    from jobs.submit import JOB_FILES, JOBS_DIR, PACKAGES

    stems = {p.stem for p in JOBS_DIR.glob("*.py")}
    assert not stems & set(PACKAGES)
    assert all((JOBS_DIR / f"{name}.py").is_file() for name in JOB_FILES.values())


def test_a_local_driver_starts_with_the_jars_ivy_resolved_before(spark, tmp_path: Path) -> None:
    """Ivy resolves Delta's jars once; later local drivers start with them, and go back to Ivy
    when one is gone or the jar settings change."""
    from dataclasses import replace

    from conftest import TEST_SPARK
    from jobs.config import cache_dir
    from jobs.spark import remember_jars, remembered_jars, spark_conf

    conf = spark_conf(TEST_SPARK, cache_dir())
    # This run's session either resolved the packages and wrote them down, or started with them.
    started = remembered_jars(conf)
    assert "spark.jars.packages" not in started and "delta-spark" in started["spark.jars"]
    running = spark.sparkContext.getConf().get("spark.jars").replace("file://", "")
    assert started["spark.jars"].split(",") == running.split(",")
    # Only jars Spark does not ship itself: no second Hadoop client, Parquet, Jackson or Log4j.
    names = [Path(j).name for j in started["spark.jars"].split(",")]
    shipped = ("org.apache.hadoop_", "org.apache.parquet_", "com.fasterxml.jackson.core_", "org.apache.logging.log4j_")
    assert not [n for n in names if n.startswith(shipped)], names

    # Another Ivy folder: nothing remembered there until a driver resolved the packages into it.
    elsewhere = spark_conf(replace(TEST_SPARK, ivy_dir=str(tmp_path / "ivy")), cache_dir())
    assert remembered_jars(elsewhere) is elsewhere
    (tmp_path / "ivy").mkdir()
    remember_jars(elsewhere, spark)
    assert remembered_jars(elsewhere)["spark.jars"] == started["spark.jars"]
    # Other jar settings (a mirror) are another resolution.
    mirrored = {**elsewhere, "spark.jars.repositories": "https://mirror.example/maven2"}
    assert remembered_jars(mirrored) is mirrored
    # A remembered jar that is gone: back to Ivy.
    record = next((tmp_path / "ivy").glob("millpond-resolved-*.txt"))
    record.write_text(record.read_text() + str(tmp_path / "gone.jar") + "\n")
    assert remembered_jars(elsewhere) is elsewhere
