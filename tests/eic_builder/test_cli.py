from __future__ import annotations

from pathlib import Path

import click
from click.testing import CliRunner

from eic_builder.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["--no-progress", *args], catch_exceptions=False)


def test_synth_scan_filter_stats(tmp_path: Path) -> None:
    root, m = tmp_path / "tree", tmp_path / "m"
    r = run("synth", str(root), "--classes", "2", "--train-per-class", "3", "--val-per-class", "1")
    assert r.exit_code == 0 and "wrote 6 train images" in r.output
    r = run("scan", str(root), "--out", str(m), "--split", "train", "--workers", "1", "--no-wordnet-check")
    assert r.exit_code == 0, r.output
    assert "-> 6 images" in r.output and "ignored         4  other split (val)" in r.output
    r = run("filter", str(m), "--out", str(tmp_path / "f"), "--drop", "small,twisted")
    assert r.exit_code == 0 and "removed" in r.output
    r = run("stats", f"train={m}", f"filtered={tmp_path / 'f'}", "--format", "csv")
    assert r.exit_code == 0 and r.output.startswith("Dataset split,train,filtered\n# of images,6,")
    from eic_builder.reference_lists import data_manifests_dir

    r = run("stats", f"train={m}", "--classes", str(data_manifests_dir() / "eic_classes.parquet"))
    assert r.exit_code == 0 and "| EIC classes present | 2 of 2,686" in r.output, r.output
    r = run("stats", f"train={m}", "--out", str(tmp_path / "t.md"))
    assert r.exit_code == 0 and (tmp_path / "t.md").read_text().startswith("| Dataset split")


def test_user_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    r = run("scan", str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert r.exit_code == 2
    assert r.output.strip().splitlines() == [f"eic-build: error: SOURCE {tmp_path / 'missing'} does not exist"]
    r = run("filter", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--drop", "tiny")
    assert r.exit_code == 2 and "unknown box flag(s) tiny" in r.output
    r = run("stats")
    assert r.exit_code == 2 and "at least one manifest" in r.output
    r = run("scan", str(tmp_path), "--out", str(tmp_path / "m"), "--format", "xls")
    assert r.exit_code == 2 and "'xls' is not one of" in r.output


def test_help_lists_commands() -> None:
    r = run("--help")
    for cmd in ("scan", "filter", "stats", "synth", "export"):
        assert cmd in r.output


def test_every_command_and_option_is_in_cli_md() -> None:
    text = (Path(__file__).resolve().parents[2] / "CLI.md").read_text()
    for name, command in main.commands.items():
        if command.hidden:  # an old name kept for scripts: documented under the new one
            continue
        assert f"## `{name}`" in text, name
        section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt != "--help":
                    assert opt in section, f"{name} {opt}"


def test_scan_checks_wnids_against_wordnet_by_default(tmp_path: Path, wordnet_index, wordnet_cache: Path,
                                                      monkeypatch) -> None:
    from PIL import Image

    from eic_builder.synthetic import SyntheticBox, ilsvrc_xml

    monkeypatch.setenv("EIC_CACHE_DIR", str(wordnet_cache))
    (tmp_path / "t/n01440764").mkdir(parents=True)
    Image.new("RGB", (60, 60)).save(tmp_path / "t/n01440764/n01440764_1.JPEG")
    boxes = [SyntheticBox("n01440764", 1, 1, 30, 30), SyntheticBox("n99999999", 1, 1, 30, 30)]
    (tmp_path / "t/n01440764/n01440764_1.xml").write_text(ilsvrc_xml("f", "x", 60, 60, boxes))
    r = run("scan", str(tmp_path / "t"), "--out", str(tmp_path / "m"))
    assert r.exit_code == 0, r.output
    assert "rejected        1  not_a_wordnet_noun" in r.output


def test_archives_demo_path(tmp_path: Path) -> None:
    """synth --layout archives -> scan (tree and archives) -> assemble -> stats in the paper's layout."""
    root, m = tmp_path / "dl", tmp_path / "m"
    r = run("synth", str(root), "--layout", "archives", "--classes", "2", "--train-per-class", "3",
            "--val-per-class", "2", "--new-per-class", "6")
    assert r.exit_code == 0 and "planted copy of an ILSVRC val image: n01832493_7" in r.output, r.output
    for split in ("train", "val"):
        r = run("scan", str(root / "ILSVRC"), "--split", split, "--out", str(m / split), "--workers", "1",
                "--no-wordnet-check")
        assert r.exit_code == 0, r.output
    r = run("scan", str(root / "fall11_whole.tar"), str(root / "Annotation.tar.gz"), "--out", str(m / "21k"),
            "--workers", "1", "--no-wordnet-check")
    assert r.exit_code == 0 and "(ilsvrc-xml, split fall11_whole)" in r.output, r.output
    r = run("assemble", str(m / "train"), str(m / "val"), str(m / "21k"), "--out", str(tmp_path / "eic"),
            "--val-per-class", "2", "--max-train-per-class", "3", "--min-train-per-class", "2")
    assert r.exit_code == 0, r.output
    assert "train: 18 images" in r.output and "val: 12 images" in r.output, r.output
    assert "1  pool image with the bytes of an ILSVRC val image" in r.output
    r = run("stats", f"EIC/Train={tmp_path / 'eic/train'}", f"EIC/Val={tmp_path / 'eic/val'}",
            f"ILSVRC/Train={m / 'train'}", f"ILSVRC/Val={m / 'val'}")
    assert r.exit_code == 0 and "Extended ImageNet" in r.output.splitlines()[0], r.output
    r = run("assemble", str(m / "21k"), "--out", str(tmp_path / "bad"), "--short-classes", "drop")
    assert r.exit_code == 2 and "Invalid value for '--short-classes'" in r.output


def test_nonsense_values_and_click_errors_are_one_line(tmp_path: Path) -> None:
    m = tmp_path / "m"
    run("synth", str(tmp_path / "tree"), "--classes", "1", "--train-per-class", "2", "--val-per-class", "1")
    assert run("scan", str(tmp_path / "tree"), "--split", "val", "--out", str(m), "--workers", "1",
               "--no-wordnet-check").exit_code == 0
    cases = [
        (("filter", str(m), "--out", str(tmp_path / "f"), "--min-side", "nan"), "--min-side=nan must be a finite"),
        (("eval-baseline", str(m), "--out", str(tmp_path / "e"), "--method", "sliding-window", "--scales", "0"),
         "--scales 0: each test scale must be >= 16 pixels"),
        (("eval-baseline", str(m), "--out", str(tmp_path / "e"), "--method", "sliding-window", "--top-k", "0"),
         "--top-k=0 must be >= 1"),
        (("train-baseline", str(m), "--out", str(tmp_path / "r"), "--tiny", "--neg-ratio", "-1"),
         "--neg-ratio=-1.0 must be a finite number >= 0"),
        (("synth", str(tmp_path / "s"), "--train-per-class", "-3"), "Invalid value for '--train-per-class'"),
        (("scan", "--out", str(m)), "Missing argument 'SOURCE...'"),
        (("stats", "x=" + str(tmp_path)), "is not a manifest directory"),
    ]
    for args, message in cases:
        r = run(*args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("eic-build: error: "), (args, r.output)
        assert message in lines[0], (args, lines[0])


def test_a_read_only_output_is_one_line(tmp_path: Path) -> None:
    """The operating system's refusals (here: an output under a file) are one line, exit 2, for any command."""
    run("synth", str(tmp_path / "tree"), "--classes", "1", "--train-per-class", "1", "--val-per-class", "1")
    (tmp_path / "file").write_text("x")
    for args in (("scan", str(tmp_path / "tree"), "--split", "val", "--out", str(tmp_path / "file" / "m"),
                  "--no-wordnet-check"),
                 ("synth", str(tmp_path / "file" / "t"))):
        r = run(*args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("eic-build: error: "), (args, r.output)


def test_every_choice_comes_from_the_choices_module() -> None:
    """Each click.Choice of eic-build is a tuple of eic_builder.choices, the one the library checks."""
    import sys

    import click

    from eic_builder import choices

    shared = {tuple(v) for k, v in vars(choices).items() if k.isupper()}
    found = 0
    for name, command in main.commands.items():
        for param in command.params:
            if isinstance(param.type, click.Choice):
                found += 1
                assert tuple(param.type.choices) in shared, f"{name} {param.opts}"
                default = param.get_default(click.Context(command)) if isinstance(param, click.Option) else None
                if default is not None and not param.multiple:
                    assert default in param.type.choices, f"{name} {param.opts}"
    assert found >= 20
    code = "import eic_builder.choices, sys; assert 'torch' not in sys.modules and 'pyarrow' not in sys.modules"
    import subprocess

    subprocess.run([sys.executable, "-c", code], check=True)


def test_the_command_line_starts_without_torch() -> None:
    """Building the commands (their help text reads the configs' defaults) must not import torch."""
    import subprocess
    import sys

    code = "import eic_builder.cli, sys; assert 'torch' not in sys.modules, 'torch imported at start-up'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_errors_name_options_as_the_caller_typed_them(tmp_path: Path) -> None:
    """One message, two languages: the option a user typed on the command line, the keyword an API caller
    passed (EICError.render and str)."""
    import pytest

    from eic_builder.assemble import AssembleOptions
    from eic_builder.audit import AuditOptions, audit_manifests
    from eic_builder.dataset.manifest import open_manifest
    from eic_builder.errors import OptionError

    root, m = tmp_path / "tree", tmp_path / "m"
    run("synth", str(root), "--classes", "1", "--train-per-class", "2", "--val-per-class", "1")
    run("scan", str(root), "--out", str(m), "--split", "train", "--no-wordnet-check")
    r = run("assemble", str(m), "--out", str(tmp_path / "eic"), "--hash-workers", "0")
    assert r.exit_code == 2 and "--hash-workers=0 must be >= 1" in r.output and "hash_workers" not in r.output
    with pytest.raises(OptionError, match=r"^hash_workers=0 must be >= 1$"):
        AssembleOptions(hash_workers=0).validate()
    r = run("audit", str(m), "--out", str(tmp_path / "a"), "--max-hamming", "64")
    assert r.exit_code == 2 and "--max-hamming=64 must be in [0, 63]" in r.output
    with pytest.raises(OptionError, match=r"^phash_threshold=64 must be in \[0, 63\]$"):
        audit_manifests([m], tmp_path / "a", AuditOptions(phash_threshold=64))
    r = run("audit", str(m), "--out", str(tmp_path / "a"), "--methods", "features")
    assert r.exit_code == 2 and "--methods features needs --features NAME=FEATDIR" in r.output
    r = run("export", str(m), "--out", str(tmp_path / "e"), "--root", str(tmp_path / "nowhere"), "--format", "voc")
    assert r.exit_code == 2 and "(given with --root) does not exist; give --root DIR" in r.output
    with pytest.raises(OptionError, match=r"does not exist; pass root=DIR"):
        open_manifest(m, root=tmp_path / "nowhere").read_bytes(open_manifest(m).image_ids[0])
    r = run("plant-copies", str(m), "--out", str(tmp_path / "p"), "--per-transform", "5")
    assert r.exit_code == 2 and "has 2 images with a file" in r.output


def _default_text(param) -> str | None:
    """How CLI.md writes an option's default: the value (``32`` for 32.0), ``on``/``off`` for a switch pair."""
    import click

    default = param.default
    if param.required or default is None or callable(default) or param.multiple or repr(default).startswith(
            "Sentinel") or isinstance(default, (list, tuple)):
        return None
    if param.is_flag and not param.secondary_opts:
        return None  # a plain flag: off unless given
    if isinstance(param.type, click.Choice) and len(param.type.choices) == 1:
        return None
    if isinstance(default, bool):
        return param.opts[0] if default else param.secondary_opts[0]
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return str(default)


def test_every_default_is_in_cli_md() -> None:
    """Each option's default, as --help shows it, is written beside the option in its CLI.md section (the
    synopsis `[--small-px 32]`, or the text `--workers` ... `default 8`): docs that drift from the code fail."""
    text = (Path(__file__).resolve().parents[2] / "CLI.md").read_text()
    missing = []
    for name, command in main.commands.items():
        if command.hidden:
            continue
        section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
        for param in command.params:
            long = [o for o in param.opts if o.startswith("--")]
            shown = _default_text(param) if long else None
            if shown is None:
                continue
            names = [long[0], *param.secondary_opts[:1]]
            lines = [line for line in section.splitlines() if any(n in line for n in names)]
            # the synopsis's `[--small-px 32]`, or a sentence saying `default 8` / `default --no-amp`
            if not any(f"{long[0]} {shown}" in line or f"{long[0]}={shown}" in line
                       or ("default" in line and shown in line) for line in lines):
                missing.append(f"{name} {long[0]} (default {shown})")
    assert not missing, "defaults not in CLI.md: " + "; ".join(missing)


def test_an_option_out_of_range_is_named_as_typed(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    run("synth", str(tree), "--classes", "1", "--train-per-class", "1", "--val-per-class", "1")
    run("scan", str(tree), "--out", str(tmp_path / "m"), "--split", "val", "--no-wordnet-check")
    for option in ("--scale-nms", "--level-nms"):
        r = run("eval-baseline", str(tmp_path / "m"), "--out", str(tmp_path / "e"), "--method", "sliding-window",
                option, "1.5")
        assert r.exit_code == 2 and f"{option}=1.5 must be in (0, 1]" in r.output, r.output


def test_stats_csv_keeps_the_random_weights_label(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    run("synth", str(tree), "--classes", "2", "--train-per-class", "1", "--val-per-class", "2")
    run("scan", str(tree), "--out", str(tmp_path / "m"), "--split", "val", "--no-wordnet-check")
    r = run("features", str(tmp_path / "m"), "--out", str(tmp_path / "f"), "--weights", "random", "--crop", "32",
            "--resize", "36")
    assert r.exit_code == 0, r.output
    md = run("stats", f"val={tmp_path / 'm'}", "--features", f"val={tmp_path / 'f'}")
    assert "(random weights)" in md.output
    csv = run("stats", f"val={tmp_path / 'm'}", "--features", f"val={tmp_path / 'f'}", "--format", "csv")
    assert csv.exit_code == 0 and csv.output.splitlines()[-1] == "Distance features,random weights", csv.output
    plain = run("stats", f"val={tmp_path / 'm'}", "--format", "csv")
    assert "Distance features" not in plain.output


# every stage's options class, by command: the one source of that command's defaults
OPTIONS_CLASSES = {
    "features": ["eic_builder.features:FeatureConfig"],
    "eval-baseline": ["baseline.config:ProposalConfig", "baseline.config:EvalOptions"],
    "assemble": ["eic_builder.assemble.options:AssembleOptions"],
    "audit": ["eic_builder.audit:AuditOptions"],
    "export": ["eic_builder.export:ExportOptions"],
    "expand-classes": ["eic_builder.expand:ExpandOptions"],
    "filter": ["eic_builder.filters:FilterOptions"],
    "train-baseline": ["baseline.config:TrainConfig"],
    "experiment": ["baseline.config:TrainConfig"],
    "pretrain": ["baseline.config:PretrainConfig"],
    "scan": ["eic_builder.scan.options:ScanOptions"],
    "stats": ["eic_builder.stats:StatsOptions"],
    "hold-out": ["eic_builder.holdout:HoldOutOptions"],
    "plant-copies": ["eic_builder.planted_copies:PlantOptions"],
}
# the training commands pass None on for "the config's default" (their help reads it from the config)
NONE_IS_THE_CLASS_DEFAULT = {"train-baseline", "experiment", "pretrain"}


def _class_default(source: str, name: str) -> object:
    import dataclasses
    import importlib

    module, _, cls = source.partition(":")
    fields = {f.name: f for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    if name not in fields:
        return dataclasses.MISSING
    f = fields[name]
    return f.default if f.default is not dataclasses.MISSING else f.default_factory()


def test_every_click_default_is_its_options_class_default() -> None:
    """A default lives in the stage's options class only: each option named like a field of it has that
    field's default (as its text form, a flag as off), so the CLI and the library never disagree."""
    import dataclasses

    wrong = []
    for command, sources in OPTIONS_CLASSES.items():
        cmd = main.commands[command]
        ctx = click.Context(cmd)
        for param in cmd.params:
            if not isinstance(param, click.Option):
                continue
            found = [(s, _class_default(s, param.name)) for s in sources]
            found = [(s, d) for s, d in found if d is not dataclasses.MISSING]
            if not found:
                continue
            source, want = found[0]
            got = param.get_default(ctx)
            if got is not None and not param.multiple:
                got = param.type_cast_value(ctx, got)  # as the command receives it: a default typed as text fails
            if got is None and command in NONE_IS_THE_CLASS_DEFAULT:
                continue
            if param.is_flag and got in (None, False) and want in (False, None):
                continue
            if param.multiple and not isinstance(got, (list, tuple)) and want in ((), None):
                continue  # a repeatable option given no value: nothing, as the class's empty default
            if isinstance(want, tuple) and isinstance(got, str):
                got = tuple(type(want[0])(v) for v in got.split(","))
            if got != want and not (got is None and want in (frozenset(), (), None)):
                wrong.append(f"{command} --{param.name}: click {got!r}, {source} {want!r}")
    assert not wrong, "\n".join(wrong)
