//! DTM's own Python client from PyPI (`dtmcli`, pinned below) drives the
//! DTM-compatible API: `dtmcli_check.py` runs a TCC that commits, a TCC
//! whose second Try refuses, a saga and a 2-phase message exactly as the
//! SDK does them, against a coordinator on real PostgreSQL and this test's
//! service; the test then checks what the service saw and what the
//! coordinator says. The client is installed with pip into a virtualenv
//! under the test's target directory at the first run. Without `python3`
//! the test says SKIPPED loudly and passes, except under `CI=true`, where
//! it fails (`.ci/run` installs `python3-venv`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use super::busi::{Answer, Busi};
use super::{Dtm, coordinator};
use crate::harness::{TestDb, on_both_stores};

/// The client checked: the newest `dtmcli` on PyPI.
const DTMCLI: &str = "dtmcli==1.7.7.0";

fn works(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import dtmcli"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A Python that has `dtmcli`: the virtualenv, made (and filled with pip)
/// when missing; `None` when there is no `python3` at all. Made once per
/// test process: this test runs on both stores at the same time, and two
/// `venv` + `pip install` runs into one directory on a fresh machine broke
/// each other (CI failed the PostgreSQL run while the SQLite one passed).
fn python_with_dtmcli() -> Option<PathBuf> {
    static PYTHON: OnceLock<Option<PathBuf>> = OnceLock::new();
    PYTHON.get_or_init(make_python_with_dtmcli).clone()
}

fn make_python_with_dtmcli() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dtmcli-venv");
    let python = venv.join("bin").join("python");
    if works(&python) {
        return Some(python);
    }
    if Command::new("python3").arg("--version").output().is_err() {
        return None;
    }
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 runs");
    assert!(
        made.status.success(),
        "python3 -m venv failed (Debian: apt-get install python3-venv): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = Command::new(venv.join("bin").join("pip"))
        .args(["install", "--quiet", DTMCLI])
        .output()
        .expect("pip runs");
    assert!(
        pip.status.success(),
        "pip install {DTMCLI} failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    assert!(works(&python), "{DTMCLI} installed but cannot be imported");
    Some(python)
}

async fn dtms_python_client_runs_tcc_saga_and_msg(db: TestDb) {
    let Some(python) = tokio::task::spawn_blocking(python_with_dtmcli)
        .await
        .unwrap()
    else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is missing under CI=true: the dtmcli test cannot run"
        );
        eprintln!("SKIPPED dtm::sdk: no python3, so DTM's Python client was not run");
        return;
    };
    let coord = coordinator(&db).await;
    let dtm = Dtm::of(&coord);
    let busi = Busi::start().await;
    busi.always(
        "RefuseTry",
        Answer::Status(409, r#"{"dtm_result":"FAILURE"}"#),
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/dtm/dtmcli_check.py");
    let args = [
        script.to_string(),
        dtm.base.clone(),
        format!("http://{}/api/busi", busi.addr),
    ];
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(args)
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dtmcli script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gids: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let gid = |k: &str| gids[k].as_str().unwrap().to_string();
    let wait = Duration::from_secs(15);

    // TCC committed: both confirmed, nothing cancelled.
    let tcc = gid("tcc_ok");
    dtm.wait_status(&tcc, "succeed", wait).await;
    for name in ["TransOutConfirm", "TransInConfirm"] {
        assert!(busi.wait_calls(&tcc, name, 1, wait).await, "{name}");
    }
    assert_eq!(busi.calls(&tcc, "TransOutConfirm")[0].branch_id, "01");
    assert!(busi.calls(&tcc, "TransOutCancel").is_empty());

    // The refused Try made the client abort: both registered branches
    // cancelled, none confirmed.
    assert_eq!(gids["tcc_refused_result"], "");
    let refused = gid("tcc_refused");
    dtm.wait_status(&refused, "failed", wait).await;
    for name in ["TransOutCancel", "TransInCancel"] {
        assert!(busi.wait_calls(&refused, name, 1, wait).await, "{name}");
    }
    assert!(busi.calls(&refused, "TransOutConfirm").is_empty());

    // The saga and the message ran their steps in order.
    for k in ["saga", "msg"] {
        let g = gid(k);
        dtm.wait_status(&g, "succeed", wait).await;
        assert_eq!(busi.order(&g), ["TransOut", "TransIn"], "{k}");
        let body: Value = serde_json::from_slice(&busi.calls(&g, "TransOut")[0].body).unwrap();
        assert_eq!(body["amount"], 30, "{k}");
    }
}

on_both_stores!(dtms_python_client_runs_tcc_saga_and_msg,);
