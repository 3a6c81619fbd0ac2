//! The Python runtimes that check qvit's ONNX exports (onnx, onnxruntime, qonnx), in a
//! virtualenv made from PyPI on first use, and `tools/export/check.py` run in it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const REQUIREMENTS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/export/requirements.txt");
const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/export/check.py");

/// Says something on the terminal even while the test harness captures output (a skip must
/// never pass unseen).
fn shout(message: &str) {
    let _ = writeln!(std::io::stderr(), "\n*** {message}\n");
}

fn has_runtimes(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import numpy, onnx, onnxruntime, qonnx"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Makes the virtualenv at `dir` from `tools/export/requirements.txt`; the error says what
/// failed.
fn make_venv(dir: &Path) -> Result<(), String> {
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ))
        }
    };
    run(Command::new("python3").args(["-m", "venv"]).arg(dir))?;
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(REQUIREMENTS))
}

/// The Python that has the runtimes: `$QVIT_EXPORT_PYTHON`, else a virtualenv under the
/// target folder (made now if missing). `None`, said loudly, when it cannot be had (no
/// python3, PyPI unreachable) — unless `QVIT_REQUIRE_EXPORT_RUNTIMES` is set (as `.ci/run`
/// does once it has made the virtualenv), in which case the test fails.
pub fn python() -> Option<&'static Path> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("QVIT_EXPORT_PYTHON") {
                let p = PathBuf::from(p);
                assert!(
                    has_runtimes(&p),
                    "QVIT_EXPORT_PYTHON={} lacks numpy, onnx, onnxruntime or qonnx",
                    p.display()
                );
                return Some(p);
            }
            let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("export-venv");
            let python = venv.join("bin/python");
            if has_runtimes(&python) {
                return Some(python);
            }
            let _ = std::fs::remove_dir_all(&venv);
            match make_venv(&venv) {
                Ok(()) if has_runtimes(&python) => Some(python),
                result => {
                    let why = result.err().unwrap_or_else(|| "imports still fail".into());
                    assert!(
                        std::env::var_os("QVIT_REQUIRE_EXPORT_RUNTIMES").is_none(),
                        "the export runtimes are required but could not be installed: {why}"
                    );
                    shout(&format!(
                        "SKIPPED: ONNX export checks need onnx, onnxruntime and qonnx from PyPI, \
                         which could not be installed ({why}). Install them with `python3 -m \
                         venv .venv && .venv/bin/pip install -r tools/export/requirements.txt` \
                         and set QVIT_EXPORT_PYTHON=.venv/bin/python."
                    ));
                    None
                }
            }
        })
        .as_deref()
}

/// Runs `tools/export/check.py` on an export (and the samples beside it) with `runtime`
/// (`onnxruntime` or `qonnx`): its JSON report. The runtime's sessions run on one thread each:
/// the tests run two at a time on CI's two cores.
pub fn check(python: &Path, model: &Path, runtime: &str) -> serde_json::Value {
    let out = Command::new(python)
        .arg(CHECK)
        .arg(model)
        .args(["--runtime", runtime, "--threads", "1"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check.py {} --runtime {runtime}: {}",
        model.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `tools/export/golden.py` on an integer-steps export and the golden vectors of the same
/// plan: its JSON report (whether it passed is in `all_equal`).
pub fn golden(python: &Path, model: &Path, vectors: &Path) -> serde_json::Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/export/golden.py");
    let out = Command::new(python)
        .arg(script)
        .arg(model)
        .arg(vectors)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "golden.py {} {}: {e}: {}",
            model.display(),
            vectors.display(),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
