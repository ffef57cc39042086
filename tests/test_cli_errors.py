"""One way to fail: every user error of the command line, in every path, prints the same form with the same exit status.

    ERROR <what>: <the value> (<what is allowed>)
      <details, indented>
    --debug shows the traceback            (argument errors: "<prog> --help lists the options")
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiffdepth_core.app.cli import main
from fiffdepth_core.app.errors import DEBUG_HINT, EXIT_ERROR, error_text, parse_error
from fiffdepth_core.fileio.errors import UserInputError

FIRST_LINE = re.compile(r"ERROR (?P<what>[^:\n]+): (?P<value>\S.*) \((?P<allowed>[^()]*(\([^()]*\)[^()]*)*)\)")


def check_form(report: str, what: str, hint: str = DEBUG_HINT) -> re.Match:
    """The report's first line has the form, names ``what``; the details are indented; the hint is the last line."""
    first, *middle, last = report.split("\n")
    match = FIRST_LINE.fullmatch(first)
    assert match, f"first line not in the form: {first!r}"
    assert match["what"] == what, (match["what"], what)
    assert all(line.startswith("  ") and line.strip() for line in middle), middle
    assert last == hint
    return match


def png(path: Path, size=(24, 32)) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


def test_error_text_of_a_user_error_and_of_other_exceptions():
    err = UserInputError("-3", "a whole number >= 0", what="--batch-size", details=["first", "second"])
    assert str(err) == "-3 (a whole number >= 0)\nfirst\nsecond"  # what a host shows
    assert error_text(err) == "--batch-size: -3 (a whole number >= 0)\n  first\n  second"
    legacy = UserInputError("line one\nline two")  # a message of several lines: value, then details
    assert (legacy.value, legacy.details, str(legacy)) == ("line one", ["line two"], "line one\nline two")
    assert error_text(FileNotFoundError(2, "No such file or directory", "x.png")) == \
        "input: x.png: No such file or directory"
    assert error_text(KeyError("k")) == "unexpected error: KeyError: 'k'"


@pytest.mark.parametrize("message, expected", [
    ("argument --format: invalid choice: 'jpeg' (choose from 'npy', 'png16')",
     ("--format", "'jpeg'", "choose from 'npy', 'png16'")),
    ("argument --batch-size: invalid int value: 'x'", ("--batch-size", "'x'", "a whole number")),
    ("argument --checkpoint: expected one argument", ("--checkpoint", "no value", "one argument")),
    ("the following arguments are required: --checkpoint", ("arguments", "missing --checkpoint",
                                                            "required by fiffdepth predict")),
    ("unrecognized arguments: --bogus", ("arguments", "--bogus not recognised",
                                         "the options fiffdepth predict --help lists")),
    ("argument COMMAND: invalid choice: 'x' (choose from 'predict')", ("command", "'x'", "choose from 'predict'")),
])
def test_argparse_messages_map_to_what_value_allowed(message, expected):
    assert parse_error(message, "fiffdepth predict") == expected


@pytest.mark.parametrize("argv, what", [
    (["predict", "a.png", "--checkpoint", "c", "--format", "jpeg"], "--format"),
    (["predict", "a.png", "--checkpoint", "c", "--batch-size", "many"], "--batch-size"),
    (["predict", "a.png"], "arguments"),
    (["predict", "a.png", "--checkpoint", "c", "--bogus"], "arguments"),
    (["guess"], "command"),
])
def test_argument_errors_take_the_same_form(argv, what, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == EXIT_ERROR
    report = capsys.readouterr().err.rstrip("\n")
    prog = "fiffdepth" if what == "command" else "fiffdepth predict"
    check_form(report, what, hint=f"{prog} --help lists the options")


@pytest.fixture
def folder(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    png(photos / "a.png")
    png(photos / "b.png")
    return photos


def test_images_path_errors(folder, tmp_path, cli_error):
    never = ["--checkpoint", str(tmp_path / "never-loaded")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_bytes(b"the user's")
    report = cli_error(["predict", str(folder), *never, "--output-dir", str(out), "--format", "npy"])
    match = check_form(report, "--output-dir")  # outputs already exist: the files are the details
    assert "1 output file(s) already exist" in match["value"] and "--skip-existing" in match["allowed"]
    assert report.split("\n")[1] == f"  {out / 'a.npy'}"

    empty = tmp_path / "empty"
    empty.mkdir()
    check_form(cli_error(["predict", str(empty), *never]), "inputs")  # no inputs found
    check_form(cli_error(["predict", str(tmp_path / "nothing.png"), *never]), "input")  # an input that is not there

    png(folder / "a_color.png")  # the user's photo, named like an output of a.png
    match = check_form(cli_error(["predict", str(folder), *never, "--output-dir", str(folder), "--format", "color",
                                  "--overwrite"]), "--output-dir")  # an output that would replace an input
    assert "would replace the input image" in match["value"] and "never overwritten" in match["allowed"]
    (folder / "a_color.png").unlink()

    (folder / "c.png").write_bytes(b"")  # unreadable inputs: each one a detail line
    report = cli_error(["predict", str(folder), *never, "--output-dir", str(tmp_path / "o")])
    check_form(report, "inputs")
    assert "c.png: the file is empty" in report.split("\n")[1]
    (folder / "c.png").unlink()

    check_form(cli_error(["predict", str(folder), *never, "--max-pixels", "100"]), "inputs")  # above the limit
    check_form(cli_error(["predict", str(folder), *never, "--batch-size", "-1"]), "--batch-size")
    check_form(cli_error(["predict", str(folder), *never, "--tile-size", "60"]), "--tile-size")
    check_form(cli_error(["predict", str(folder), *never, "--skip-existing", "--normalization", "whole_batch"]),
               "--skip-existing")
    assert not (tmp_path / "o").exists()


def test_checkpoint_errors_take_the_same_form(folder, tmp_path, tiny_checkpoint, cli_error):
    import shutil

    base = ["predict", str(folder / "a.png"), "--output-dir", str(tmp_path / "o"), "-q"]
    report = cli_error([*base, "--checkpoint", str(tmp_path / "missing")])
    match = check_form(report, "--checkpoint")
    assert match["value"] == f"{tmp_path / 'missing'} not found" and "expected one of:" in report
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    shutil.rmtree(broken / "vae")
    report = cli_error([*base, "--checkpoint", str(broken)])
    check_form(report, "--checkpoint")  # incomplete: the problems, what was found and the layouts are details
    assert "  - missing vae/config.json" in report.split("\n") and not report.split("\n")[-2].endswith(DEBUG_HINT)
    (tmp_path / "notes").mkdir()
    check_form(cli_error([*base, "--checkpoint", str(tmp_path / "notes")]), "--checkpoint")  # not a checkpoint
    config = broken / "unet" / "config.json"
    config.write_text(config.read_text().replace('"in_channels": 4', '"in_channels": 4.5'))
    shutil.copytree(tiny_checkpoint / "vae", broken / "vae")
    match = check_form(cli_error([*base, "--checkpoint", str(broken)]), "--checkpoint")  # one of the one-line ones
    assert "`in_channels` in the unet config must be a whole number" in match["value"]
    assert match["allowed"].startswith("a diffusers pipeline folder")


def test_sequence_and_parallel_path_errors(folder, tmp_path, monkeypatch, cli_error):
    never = ["--checkpoint", str(tmp_path / "never-loaded"), "--output-dir", str(tmp_path / "o")]
    png(folder / "c.png", size=(20, 32))
    match = check_form(cli_error(["predict", str(folder), "--temporal", "align", *never]), "--temporal align")
    assert "c.png is 32x20" in match["value"]  # a sequence whose frames differ in size
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")  # torchrun's variables, as a broken launcher sets them
    match = check_form(cli_error(["predict", str(folder), *never]), "environment variable")
    assert match["value"] == "RANK=2"


def test_video_path_errors(tmp_path, cli_error):
    pytest.importorskip("av", reason="PyAV (the `video` extra) is not installed")
    from clips import write_flat_clip

    clips = tmp_path / "clips"
    write_flat_clip(clips / "walk.mp4")
    never = ["--checkpoint", str(tmp_path / "never-loaded")]
    out = tmp_path / "out"
    (out / "walk").mkdir(parents=True)
    (out / "walk" / "walk_000000.npy").write_bytes(b"keep")
    match = check_form(cli_error(["predict", str(clips), *never, "--output-dir", str(out)]), "--output-dir")
    assert "walk/ (not empty)" in match["value"]
    check_form(cli_error(["predict", str(clips), *never, "--output-dir", str(tmp_path / "o"), "--stream-window",
                          "-2"]), "--stream-window")
    report = cli_error(["predict", str(clips), *never, "--output-dir", str(tmp_path / "o"), "--max-pixels", "1000"])
    check_form(report, "inputs")
    assert "56x40 frames = 2240 pixels, above the limit of 1000 pixels" in report  # not "0.0 megapixels"


@pytest.mark.slow
def test_the_console_script_and_the_module_name_themselves_and_fail_in_the_form(tmp_path):
    script = Path(sys.executable).with_name("fiffdepth")
    if not script.is_file():
        pytest.skip(f"the console script is not installed beside {sys.executable} (pip install -e .)")
    helps = {"fiffdepth": [str(script)], "python -m fiffdepth_core": [sys.executable, "-m", "fiffdepth_core"]}
    for prog, command in helps.items():
        result = subprocess.run([*command, "predict", "--help"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0 and result.stdout.startswith(f"usage: {prog} predict "), result.stdout[:200]
        assert "`" not in result.stdout
    top = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=300).stdout
    assert "predict" in top and "videos" in top and "`" not in top
    png(tmp_path / "a.png")
    result = subprocess.run([str(script), "predict", str(tmp_path / "a.png"), "--checkpoint", str(tmp_path / "none"),
                             "--output-dir", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_ERROR
    lines = result.stderr.rstrip("\n").split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("ERROR"))
    check_form("\n".join(lines[start:]), "--checkpoint")


def test_the_documented_synopsis_is_the_parsers():
    """docs/cli.md shows exactly the options the parser takes (regenerate it with options.synopsis if this fails)."""
    from fiffdepth_core.app.options import build_parser, synopsis

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    block = re.search(r"<!-- generated from the parser.*?-->\n```text\n(.*?)\n```", text, re.S)
    assert block, "docs/cli.md lost its generated synopsis block"
    parser = build_parser()
    assert block[1] == synopsis(parser, "predict"), "docs/cli.md's synopsis differs from:\n" + synopsis(parser,
                                                                                                         "predict")
    flags = {flag for action in parser.commands["predict"]._actions for flag in action.option_strings} - {"-h",
                                                                                                         "--help"}
    assert flags and all(re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", block[1]) for flag in flags)
