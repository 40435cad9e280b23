"""Every ``python -m pipelines.<name>`` command keeps the conventions of :mod:`pipelines.cli`.

The test walks each command's parser (and each subcommand's), so a new command or flag that breaks the
shared vocabulary fails here with the command and the flag named: the same noise flags everywhere and
after a subcommand's name too, ``--out`` where a command writes, ``--json`` where it reports, one default
for ``--device``, a stated default for ``--num-workers``, and exit code 2 for usage errors.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil

import pytest

import pipelines
from pipelines import cli
from shared.errors import DiscoVLAError, UsageError

COMMANDS = sorted(
    m.name
    for m in pkgutil.iter_modules(pipelines.__path__)
    if hasattr(importlib.import_module(f"pipelines.{m.name}"), "build_parser")
)
# where each command writes: "--out", or a positional named here (the shards tools take OUT like cp)
WRITES = {
    "caption": "--out",
    "demo": "--out",
    "evaluate": "--out",
    "index": "--out",
    "train": "--out",
    "framestore build": "--out",
    "shards merge": "out",
    "shards import-json": "out",
    "shards export-json": "out",
    "shards view": "out",
    "frames": "--out",
}
REPORTS = [  # commands whose report has a --json form
    "index",
    "search",
    "shards info",
    "shards validate",
    "shards merge",
    "shards import-json",
    "shards write-manifest",
    "framestore info",
    "framestore validate",
]


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """'name' or 'name sub' -> its parser, for every command and subcommand."""
    found = {}
    for name in COMMANDS:
        parser = importlib.import_module(f"pipelines.{name}").build_parser()
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    found[f"{name} {sub}"] = subparser
    return found


PARSERS = _parsers()


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings} | {
        a.dest: a for a in parser._actions if not a.option_strings
    }


def test_every_command_is_walked():
    assert {"caption", "evaluate", "framestore", "index", "search", "shards", "train"} <= set(COMMANDS)
    assert {"shards validate", "framestore build"} <= set(PARSERS)


@pytest.mark.parametrize("name", COMMANDS)
def test_prog_names_the_module(name):
    assert PARSERS[name].prog == f"python -m pipelines.{name}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_flag_has_help_and_the_noise_flags_are_everywhere(name):
    parser = PARSERS[name]
    options = _options(parser)
    missing = [f for f in ("-v", "--verbose", "-q", "--quiet", "--no-progress") if f not in options]
    assert not missing, f"pipelines.{name} lacks {missing}: build it with cli.parser / cli.add_subcommand"
    silent = [a.dest for a in parser._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert not silent, f"pipelines.{name}: arguments without help: {silent}"


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_no_two_arguments_share_a_destination(name):
    """(``import-json IN.json`` and ``--json`` once both wrote ``args.json``: the flag replaced the file.)"""
    dests = [a.dest for a in PARSERS[name]._actions if a.dest not in ("help", argparse.SUPPRESS)]
    assert len(dests) == len(set(dests)), (
        f"pipelines.{name}: {sorted({d for d in dests if dests.count(d) > 1})}"
    )


def test_import_json_keeps_its_input_with_json(tmp_path):
    args = PARSERS["shards"].parse_args(
        ["import-json", "in.json", "out", "--dataset-name", "x", "--split", "y", "--json"]
    )
    assert args.input == "in.json" and args.json is True


@pytest.mark.parametrize("name", [n for n in PARSERS if " " in n])
def test_noise_flags_work_before_and_after_a_subcommand(name):
    command, sub = name.split(" ")
    parser = PARSERS[command]
    required = [a for a in PARSERS[name]._actions if not a.option_strings and a.required and a.nargs != 0]
    positional = ["X"] * sum(1 if a.nargs in (None, 1) else 2 if a.nargs == "+" else 0 for a in required)
    options = [a for a in PARSERS[name]._actions if a.required and a.option_strings]
    required_options = [x for a in options for x in (a.option_strings[0], a.choices[0] if a.choices else "x")]
    for argv in ([sub, *positional, "-q"], ["-q", sub, *positional], [sub, *positional, "--no-progress"]):
        args = parser.parse_args([*argv, *required_options])
        assert not cli.progress_enabled(args), (name, argv)
    args = parser.parse_args([sub, *positional, "-v", *required_options])
    assert args.verbose and not args.quiet and cli.progress_enabled(args)


@pytest.mark.parametrize(("name", "flag"), sorted(WRITES.items()))
def test_commands_that_write_say_where_with_out(name, flag):
    assert name in PARSERS, f"pipelines.{name} is gone: update WRITES"
    assert flag in _options(PARSERS[name]), f"pipelines.{name} writes but has no {flag}"


@pytest.mark.parametrize("name", REPORTS)
def test_commands_that_report_have_json_with_a_documented_shape(name):
    action = _options(PARSERS[name]).get("--json")
    assert action is not None, f"pipelines.{name} reports but has no --json (cli.add_json_flag)"
    assert "{" in action.help or "JSON" in action.help, f"pipelines.{name} --json: say the shape in its help"


@pytest.mark.parametrize("name", sorted(n for n, p in PARSERS.items() if "--device" in _options(p)))
def test_device_defaults_to_cuda_when_available(name):
    action = _options(PARSERS[name])["--device"]
    assert action.default is None and "cuda when available" in action.help, (
        f"pipelines.{name} --device: default {action.default!r}; use cli.add_device_arg"
    )


@pytest.mark.parametrize("name", sorted(n for n, p in PARSERS.items() if "--num-workers" in _options(p)))
def test_num_workers_states_its_default(name):
    action = _options(PARSERS[name])["--num-workers"]
    assert "default" in action.help, f"pipelines.{name} --num-workers: say the default in its help"


@pytest.mark.parametrize("name", COMMANDS)
def test_an_unknown_flag_exits_2(name, capsys):
    with pytest.raises(SystemExit) as code:
        PARSERS[name].parse_args(["--no-such-flag"])
    assert code.value.code == 2 and "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("error", "code"),
    [(UsageError("bad --set"), 2), (DiscoVLAError("a file is damaged"), 1), (OSError("gone"), 1)],
)
def test_exit_codes_of_expected_errors(error, code, capsys):
    def run(args):
        raise error

    assert cli.main(cli.parser("x", None), run, []) == code
    assert capsys.readouterr().err == f"error: {error}\n"


def test_settings_errors_exit_2_in_train_and_shards(tmp_path, capsys):
    from pipelines import shards, train

    assert train.main(["--set", "no_such_field=1", "--dry-run"]) == 2
    assert "no_such_field" in capsys.readouterr().err
    assert train.main(["--out", str(tmp_path), "--set", f"output_dir={tmp_path}", "--dry-run"]) == 2
    assert "--out and --set output_dir" in capsys.readouterr().err
    from shared.shards.example import write_example_set

    write_example_set(tmp_path / "set", ["a", "b"])
    assert shards.main(["export-json", str(tmp_path / "set"), str(tmp_path / "x.json")]) == 2


def test_train_out_is_the_output_dir(tmp_path, capsys):
    from pipelines import train

    assert train.main(["--out", str(tmp_path / "run"), "--dry-run", "--pretrained", "none"]) == 0
    assert str(tmp_path / "run") in capsys.readouterr().out


def test_caption_exits_2_for_a_bad_split_and_1_for_a_missing_file(tmp_path, capsys):
    from pipelines import caption

    common = [
        "--out",
        str(tmp_path / "out"),
        "--annotations",
        str(tmp_path),
        "--video-root",
        str(tmp_path),
        "-q",
    ]
    assert caption.main(["--dataset", "msrvtt", "--split", "nosuch", *common]) == 2
    assert "has no split 'nosuch'" in capsys.readouterr().err
    assert caption.main(["--dataset", "folder", "--split", "test", *common]) == 1  # no test.jsonl there
    assert "not found" in capsys.readouterr().err


def test_an_unknown_device_is_a_usage_error(tmp_path, capsys):
    from pipelines import index

    argv = ["--videos", str(tmp_path), "--adapters", "none", "--out", str(tmp_path / "i"), "--device", "gpu0"]
    assert index.main(argv) == 2
    assert "error: --device 'gpu0'" in capsys.readouterr().err
    from pipelines import evaluate

    argv = ["--dataset", "folder", "--adapters", "none", "--out", str(tmp_path / "e"), "--device", "gpu0"]
    assert evaluate.main(argv) == 2
    assert "error: --device 'gpu0'" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--batch-size", "--chunk-videos", "--image-size", "--frames", "--words"])
def test_index_sizes_below_one_are_usage_errors(flag, capsys):
    with pytest.raises(SystemExit) as code:
        PARSERS["index"].parse_args(["--videos", "v", "--adapters", "none", "--out", "i", flag, "0"])
    assert code.value.code == 2 and "expected a whole number of at least 1" in capsys.readouterr().err
