"""The layers point one way: artifact <- engines <- export <- cli; train beside engines, never importing each other;
data and artifact import no torch; the formats table and the model configurations import no torch either."""

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "cfnsr"


def _imports(path: Path, top_level_only: bool = False) -> set[str]:
    """Absolute names of the cfnsr modules and third-party packages ``path`` imports (anywhere in the file, or only
    at module level)."""
    tree = ast.parse(path.read_text())
    module = ".".join(path.relative_to(PKG.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.add(name)
            out |= {f"{name}.{a.name}" for a in node.names}
    return out


def _modules(sub: str):
    return sorted((PKG / sub).rglob("*.py")) if (PKG / sub).is_dir() else [PKG / f"{sub}.py"]


def test_engines_never_import_export_or_train():
    for path in _modules("engines"):
        bad = {i for i in _imports(path) if i.startswith(("cfnsr.export", "cfnsr.train"))}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_artifact_and_data_import_no_torch_at_import_time():
    for path in _modules("data") + _modules("artifact") + _modules("metrics"):
        top = _imports(path, top_level_only=True)
        assert not {i for i in top if i.split(".")[0] == "torch"}, f"{path.relative_to(PKG)} imports torch"
        assert not {i for i in top if i.startswith(("cfnsr.model", "cfnsr.export", "cfnsr.train", "cfnsr.engines"))}, \
            f"{path.relative_to(PKG)} imports a higher layer"


def test_export_never_imports_train():
    for path in _modules("export"):
        assert not {i for i in _imports(path) if i.startswith("cfnsr.train")}, f"{path.relative_to(PKG)} imports train"


def test_train_never_imports_engines_or_export():
    for path in _modules("train"):
        bad = {i for i in _imports(path) if i.startswith(("cfnsr.engines", "cfnsr.export"))}
        assert not bad, f"{path.relative_to(PKG)} imports {sorted(bad)}"


def test_evaluation_imports_no_trainer():
    assert not {i for i in _imports(PKG / "train" / "evaluate.py") if i.startswith("cfnsr.train.trainer")}


def test_torch_free_import_paths():
    """The formats table, the model configurations and calibration's module import without torch (and calibration
    without ONNX Runtime) at import time, so the CLI's choices and --config names cost nothing."""
    code = ("import sys; sys.modules['torch'] = None; import cfnsr.export.formats, cfnsr.model.config; "
            "from cfnsr.model import list_configs; assert list_configs(); import cfnsr.export.calibrate; "
            "assert 'onnxruntime' not in sys.modules, 'calibrate imports onnxruntime'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_without_torch():
    """`cfnsr synth-ravdess --help` and `cfnsr info` in an environment where torch cannot be imported."""
    block = "import sys; sys.modules['torch'] = None; from cfnsr.cli import main; main([{args}])"
    r = subprocess.run([sys.executable, "-c", block.format(args="'synth-ravdess', '--help'")], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and "--actors" in r.stdout, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-c", block.format(args="'info'")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "torch" in r.stdout and "Traceback" not in r.stdout + r.stderr


# Functions that write a file themselves, and why that is not a way around cfnsr.fileio.
_WRITES_ALLOWED = {
    ("export/onnx_graph.py", "export_fp32"): "writes where its caller says: a temp_dir of the export",
    ("export/pipeline.py", "export_onnx"): "writes into job.tmp, the export's temp_dir",
    ("export/pipeline.py", "_compose_media"): "writes into job.tmp, the export's temp_dir",
    ("data/synth.py", "write_clip"): "muxes into the path its caller gives: an atomic_path temporary",
    ("data/cache.py", "_cache_lock"): "the lock file itself (flock), emptied on exit",
    ("data/cache.py", "_preprocess_locked"): "progress.jsonl, an append-only log whose torn last line is skipped",
    ("engines/live.py", "__call__"): "the overlay muxes into an atomic_path temporary entered when the first frame "
                                     "comes (its size is known only then)",
    ("engines/live.py", "run_live"): "--jsonl/--csv are opened on atomic_path temporaries held by an ExitStack",
    ("export/auto.py", "search"): "state.save() is the search State's, which writes through fileio.write_json",
    ("export/auto.py", "evaluate"): "state.save() is the search State's, which writes through fileio.write_json",
    ("export/auto.py", "path"): "candidate graphs go into the folder the export gives: its temp_dir",
}


def _writes(tree: ast.AST):
    """(function name, line) of each call that writes a file: open() for writing, Path.write_text/write_bytes,
    np.save / torch.save / onnx.save / program.save, savefig, av.open(..., "w")."""
    def mode_of(call):
        args = [a for a in call.args[1:2]] + [k.value for k in call.keywords if k.arg == "mode"]
        return next((a.value for a in args if isinstance(a, ast.Constant) and isinstance(a.value, str)), "r")

    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
        writes = ((isinstance(f, ast.Attribute) and name in ("write_text", "write_bytes", "save", "savefig"))
                  or (name == "open" and any(c in mode_of(node) for c in "wax+")))  # fileio's write_text is fine
        if not writes:
            continue
        p, inside = node, None
        while p in parents:
            p = parents[p]
            if isinstance(p, ast.With) and any(
                    isinstance(i.context_expr, ast.Call) and getattr(i.context_expr.func, "id", "") in
                    ("atomic_path", "temp_dir") for i in p.items):
                inside = "fileio"
                break
            if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) and inside is None:
                inside = p.name
        yield inside, node.lineno


def test_every_file_is_written_through_fileio():
    """A write is inside ``with atomic_path(...)`` / ``with temp_dir(...)``, or in a function listed above with its
    reason; everything else goes through fileio's writers (write_text, write_json, save_npy)."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        if rel == "fileio.py":
            continue
        for where, line in _writes(ast.parse(path.read_text())):
            if where != "fileio" and (rel, where) not in _WRITES_ALLOWED:
                bad.append(f"{rel}:{line} (in {where})")
    assert not bad, "writes that bypass cfnsr.fileio: " + ", ".join(bad)
