"""Trust (issue 12): names that become paths, masked storage passwords, ML_SEARCH_STORAGE, one
open_storage for search and visualise (journal files included), storage failures as one line,
--sampler keeping the spec's arguments, --join --n-trials, and the layout rules."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from conftest import REPO, run_cli

from ml_framework.cli.search import main as search_main
from ml_framework.cli.train import main as train_main
from ml_framework.cli.visualise import main as visualise_main
from ml_framework.errors import ConfigError
from ml_framework.fileio import check_name
from ml_framework.search.registry import switch_type
from ml_framework.search.storage import journal_path, open_storage, remove_study_dir, set_user_attrs
from ml_framework.urls import mask_url

SPACE = {"optimizer.lr": {"type": "loguniform", "low": 1e-3, "high": 5e-2}}
SECRET = "s3cretPW"


def write_config(tmp_path: Path, data_dir: Path, search: dict[str, Any] | None = None) -> Path:
    """One epoch on 8x8 digits, one trial: each search here takes about a second."""
    cfg = {
        "data": {"dataset_name": "digits", "data_dir": str(data_dir), "image_size": 8, "channels": 1},
        "model": {"architecture": "simple_cnn", "width": 4, "depth": 1},
        "training": {"num_epochs": 1, "batch_size": 128, "device": "cpu", "seed": 0},
        "optimizer": {"name": "adamw", "lr": 0.01},
        "output": {"runs_dir": str(tmp_path / "runs")},
        "search": {
            "n_trials": 1,
            "metric": "val_acc",
            "sampler": {"type": "RandomSampler", "seed": 0},
            "pruner": {"type": "NopPruner"},
            "search_space": SPACE,
            **(search or {}),
        },
    }
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def with_password(url: str, password: str = SECRET) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).set(password=password).render_as_string(hide_password=False)


def files_holding(root: Path, text: str) -> list[Path]:
    """Every file under root whose bytes contain `text`."""
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


# ------------------------------------------------------------------ item 1: names that become paths


@pytest.mark.parametrize("name", ["ok", "digits_optimization", "a.b-c_1"])
def test_safe_names_pass(name: str) -> None:
    assert check_name(name, "--study-name") == name


@pytest.fixture
def populated_runs(tmp_path: Path) -> dict[str, Path]:
    """A runs dir holding an existing study (in optuna.db and on disk), another run, and a victim
    folder outside the runs dir."""
    runs = tmp_path / "runs"
    root = runs / "optuna_studies"
    (root / "kept_study").mkdir(parents=True)
    (root / "kept_study" / "best_params.json").write_text("{}")
    db = root / "optuna.db"
    optuna.create_study(study_name="kept_study", storage=f"sqlite:///{db}")
    (runs / "other_run").mkdir()
    (runs / "other_run" / "metrics.json").write_text("{}")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious.txt").write_text("keep me")
    return {"runs": runs, "db": db, "victim": victim}


def _survived(p: dict[str, Path]) -> None:
    assert p["db"].is_file()
    assert (p["db"].parent / "kept_study" / "best_params.json").is_file()
    assert (p["runs"] / "other_run" / "metrics.json").is_file()
    assert (p["victim"] / "precious.txt").is_file()
    assert "kept_study" in optuna.get_all_study_names(f"sqlite:///{p['db']}")


@pytest.mark.parametrize("name", [".", "..", "ABS", "a/b", "../victim"])
def test_overwrite_with_a_path_like_study_name_deletes_nothing(
    digits_dir: Path, tmp_path: Path, populated_runs: dict[str, Path], capsys, name: str
) -> None:
    name = str(populated_runs["victim"]) if name == "ABS" else name
    path = write_config(tmp_path, digits_dir)
    assert search_main(["--config", str(path), "--study-name", name, "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "--study-name" in err and "cannot be used as a directory name" in err
    _survived(populated_runs)


def test_study_name_in_the_config_is_checked(
    digits_dir: Path, tmp_path: Path, populated_runs: dict[str, Path], capsys
) -> None:
    path = write_config(tmp_path, digits_dir, {"study_name": ".."})
    assert search_main(["--config", str(path), "--overwrite"]) == 2
    assert "search.study_name" in capsys.readouterr().err
    _survived(populated_runs)


def test_visualise_refuses_a_path_like_study_name(tmp_path: Path, populated_runs, capsys) -> None:
    storage = f"sqlite:///{populated_runs['db']}"
    assert visualise_main(["--storage", storage, "--study-name", "../victim", "--runs-dir", "x"]) == 2
    assert "cannot be used as a directory name" in capsys.readouterr().err
    _survived(populated_runs)


@pytest.mark.parametrize("name", ["../escaped", "ABS", ".."])
def test_train_name_cannot_leave_the_runs_dir(digits_dir: Path, tmp_path: Path, capsys, name: str) -> None:
    target = tmp_path / "abs_run"
    name = str(target) if name == "ABS" else name
    path = write_config(tmp_path, digits_dir)
    assert train_main(["--config", str(path), "--name", name]) == 2
    assert "output.name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not target.exists()


@pytest.mark.slow
def test_overwrite_keeps_the_dir_of_a_study_the_storage_does_not_hold(
    digits_dir: Path, tmp_path: Path
) -> None:
    """A folder under the study root that is no study of this storage is not deleted by --overwrite."""
    path = write_config(tmp_path, digits_dir)
    foreign = tmp_path / "runs" / "optuna_studies" / "fresh"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    assert search_main(["--config", str(path), "--study-name", "fresh", "--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine"
    assert (foreign / "summary.json").is_file()


def test_overwrite_never_follows_a_symlinked_study_dir(tmp_path: Path, populated_runs) -> None:
    link = populated_runs["runs"] / "optuna_studies" / "linked"
    link.symlink_to(populated_runs["victim"], target_is_directory=True)
    with pytest.raises(ConfigError, match="not deleting"):
        remove_study_dir("linked", populated_runs["runs"])
    _survived(populated_runs)


# ------------------------------------------------------------------ item 3: passwords never shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://u:pw@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgresql+psycopg://u:p%40ss@h/db", "postgresql+psycopg://u:***@h/db"),
        ("postgresql://u:p@ss:w@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=pw&x=1", "postgresql://u@h/db?password=***&x=1"),
        ("sqlite:///runs/optuna.db", "sqlite:///runs/optuna.db"),
        ("journal:///runs/s.log", "journal:///runs/s.log"),
    ],
)
def test_mask_url(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_dry_run_masks_the_password_and_reads_the_env_var(
    digits_dir: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, digits_dir)
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test"
    assert search_main(["--config", str(path), "--storage", url, "--dry-run"]) == 0
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err and "postgresql://postgres:***@127.0.0.1:5432/test" in out.out

    monkeypatch.setenv("ML_SEARCH_STORAGE", url.replace("5432/test", "5432/from_env"))
    assert search_main(["--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "postgres:***@127.0.0.1:5432/from_env" in out.out and SECRET not in out.out + out.err
    # the flag beats the variable
    assert search_main(["--config", str(path), "--dry-run", "--storage", "sqlite:///flag.db"]) == 0
    assert "sqlite:///flag.db" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["search", "visualise"])
def test_unreachable_server_is_one_masked_line(
    digits_dir: Path, tmp_path: Path, capsys, command: str
) -> None:
    url = f"postgresql://postgres:{SECRET}@127.0.0.1:1/test"  # nothing listens on port 1
    if command == "search":
        code = search_main(["--config", str(write_config(tmp_path, digits_dir)), "--storage", url])
    else:
        code = visualise_main(["--storage", url, "--study-name", "s"])
    assert code == 2
    out = capsys.readouterr()
    assert SECRET not in out.out + out.err
    assert "cannot open study storage postgresql://postgres:***@127.0.0.1:1/test" in out.err
    assert "Traceback" not in out.err


def test_sqlite_in_a_folder_that_cannot_exist_is_one_line(digits_dir: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    url = f"sqlite:///{blocker}/sub/optuna.db"
    assert search_main(["--config", str(write_config(tmp_path, digits_dir)), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "cannot create the folder" in err and "Traceback" not in err


@pytest.mark.postgres
@pytest.mark.slow
def test_search_on_postgres_with_a_password_never_shows_it(
    digits_dir: Path, tmp_path: Path, postgres_url: str, unique_name: str, monkeypatch, capsys
) -> None:
    """The local server trusts 127.0.0.1, so it ignores the password; the framework must not print
    or write it anywhere (study line, next: hint, summary, configs)."""
    from conftest import run_cli

    url = with_password(postgres_url)
    path = write_config(tmp_path, digits_dir)
    env = {**os.environ, "ML_SEARCH_STORAGE": url}
    try:
        r = run_cli(["ml-search", "--config", str(path), "--study-name", unique_name], tmp_path, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
        assert SECRET not in r.stdout + r.stderr and ":***@" in r.stdout
        monkeypatch.setenv("ML_SEARCH_STORAGE", url)
        assert visualise_main(["--study-name", "nope", "--runs-dir", str(tmp_path / "runs")]) == 2
        out = capsys.readouterr()
        assert "unknown study" in out.err and SECRET not in out.out + out.err
        assert (tmp_path / "runs" / "optuna_studies" / unique_name / "summary.json").is_file()
        assert files_holding(tmp_path, SECRET) == []
    finally:
        optuna.delete_study(study_name=unique_name, storage=postgres_url)


# ------------------------------------------------------------------ item 11a: one open_storage


def test_journal_urls_use_sqlite_slashes() -> None:
    assert journal_path("journal:///studies/s.log") == Path("studies/s.log")
    assert journal_path("journal:////abs/s.log") == Path("/abs/s.log")


@pytest.mark.slow
def test_relative_journal_for_search_and_visualise(
    digits_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    url = "journal:///journals/study.log"
    path = write_config(tmp_path, digits_dir)
    assert search_main(["--config", str(path), "--storage", url, "--study-name", "j"]) == 0
    assert (tmp_path / "journals" / "study.log").is_file()
    assert not Path("/journals/study.log").exists()
    capsys.readouterr()
    args = ["--storage", url, "--study-name", "j", "--plot-type", "optimization_history", "--format", "html"]
    assert visualise_main([*args, "--output", str(tmp_path / "plots")]) == 0
    assert (tmp_path / "plots" / "report.html").is_file()
    # a reader never creates an empty journal
    assert visualise_main(["--storage", "journal:///missing.log", "--study-name", "j"]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "missing.log").exists()


# ------------------------------------------------------------------ item 11c: --sampler keeps the spec


def test_switch_type_keeps_what_the_new_class_takes() -> None:
    spec = {"type": "TPESampler", "seed": 3, "n_startup_trials": 5, "multivariate": True}
    assert switch_type(spec, "random", "sampler") == (
        {"type": "RandomSampler", "seed": 3},
        ["multivariate", "n_startup_trials"],
    )
    assert switch_type(spec, "tpe", "sampler") == ({**spec}, [])
    pruner = {"type": "MedianPruner", "n_startup_trials": 2, "n_warmup_steps": 1}
    assert switch_type(pruner, "percentile", "pruner") == (
        {"type": "PercentilePruner", "n_startup_trials": 2, "n_warmup_steps": 1},
        [],
    )


def test_sampler_flag_keeps_seed_and_warns_once(digits_dir: Path, tmp_path: Path, capsys) -> None:
    spec = {"type": "TPESampler", "seed": 3, "n_startup_trials": 5}
    path = write_config(tmp_path, digits_dir, {"sampler": spec})
    assert search_main(["--config", str(path), "--strategy", "random", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "RandomSampler(seed=3)" in out
    warnings = [line for line in out.splitlines() if "n_startup_trials" in line]
    assert len(warnings) == 1 and "--sampler RandomSampler" in warnings[0]
    assert search_main(["--config", str(path), "--sampler", "tpe", "--dry-run"]) == 0
    assert "TPESampler(seed=3, n_startup_trials=5)" in capsys.readouterr().out


# ------------------------------------------------------------------ item 11d: --join --n-trials


@pytest.mark.slow
def test_join_with_more_trials_raises_the_budget(digits_dir: Path, tmp_path: Path, capsys) -> None:
    path = write_config(tmp_path, digits_dir)
    db = f"sqlite:///{tmp_path / 'runs' / 'optuna_studies' / 'optuna.db'}"
    assert search_main(["--config", str(path), "--study-name", "b"]) == 0
    capsys.readouterr()
    assert search_main(["--config", str(path), "--study-name", "b", "--join", "--n-trials", "3"]) == 0
    assert "raised from 1 to 3" in capsys.readouterr().out
    study = optuna.load_study(study_name="b", storage=db)
    assert len([t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3
    # a smaller N is said plainly, and leaves the budget as it is
    assert search_main(["--config", str(path), "--study-name", "b", "--join", "--n-trials", "2"]) == 0
    out = capsys.readouterr().out
    assert "below the budget" in out and "nothing to run" in out
    assert len(optuna.load_study(study_name="b", storage=db).trials) == 3


# ------------------------------------------------------------------ layout and repository hygiene


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_config_imports_no_higher_layer() -> None:
    higher = ("data", "models", "training", "search", "visualise", "cli", "initconfig")
    for path in (REPO / "ml_framework" / "config").glob("*.py"):
        bad = [m for m in _imports(path) if m.startswith(tuple(f"ml_framework.{h}" for h in higher))]
        assert not bad, f"{path.name} imports {bad}"


def test_one_definition_of_storage_best_and_dominance() -> None:
    defs: dict[str, list[str]] = {}
    for path in (REPO / "ml_framework").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                defs.setdefault(node.name, []).append(str(path.relative_to(REPO)))
    for name in ("open_storage", "best_trial", "best_trials", "dominates", "is_better"):
        assert len(defs.get(name, [])) == 1, (name, defs.get(name))
    assert "_dominates" not in defs


def test_no_large_or_binary_files_are_committed() -> None:
    try:
        files = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = [f for f in files if f and (REPO / f).is_file()]
    assert files, "git ls-files listed nothing"
    assert not [f for f in files if f.endswith(".whl")]
    big = [f for f in files if (REPO / f).stat().st_size > 1_000_000]
    assert not big, big


# ------------------------------------------------------------------ nothing lost at exit


def test_a_search_command_leaves_its_whole_study_in_the_db_file(digits_dir: Path, tmp_path: Path) -> None:
    """ml-search closes the SQLite file it used in WAL mode before the process exits (the exit then
    skips the interpreter's last scan for garbage, which would otherwise close it): no write-ahead log
    is left beside the .db, and a copy of the .db alone holds every trial."""
    path = write_config(tmp_path, digits_dir, {"n_trials": 2})
    out = run_cli(["ml-search", "--config", str(path)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert not out.stderr.strip(), out.stderr[-2000:]
    db = tmp_path / "runs" / "optuna_studies" / "optuna.db"
    assert [p.name for p in db.parent.glob("optuna.db*")] == ["optuna.db"]
    copy = tmp_path / "copy" / "optuna.db"
    copy.parent.mkdir()
    shutil.copy(db, copy)
    study = optuna.load_study(study_name="digits_optimization", storage=f"sqlite:///{copy}")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE"]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_set_user_attrs_writes_them_all_in_one_transaction(tmp_path: Path, kind: str) -> None:
    from sqlalchemy import event

    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:///{tmp_path / 's.log'}"
    storage = open_storage(url)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    commits = []
    if kind == "sqlite":
        event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    attrs = {"best_epoch": 3, "last_epoch": 4, "metrics": {"val_acc": 0.5}}
    set_user_attrs(trial, attrs)
    assert len(commits) == (1 if kind == "sqlite" else 0)  # with this Optuna, the batched path
    assert trial.user_attrs == attrs  # the trial's own view follows, as with set_user_attr
    study.tell(trial, 1.0)
    assert optuna.load_study(study_name="s", storage=storage).trials[0].user_attrs == attrs
