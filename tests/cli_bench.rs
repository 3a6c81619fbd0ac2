//! `qvit bench` end to end: its rows, the peaks it measures around the runs, each row's share
//! of the peak of the arithmetic it runs, and its errors.

use std::process::{Command, Output};

use serde_json::Value;

fn qvit(args: &[&str], isa: Option<&str>) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_qvit"));
    cmd.args(args);
    if let Some(isa) = isa {
        cmd.env("QVIT_ISA", isa);
    }
    cmd.output().expect("the qvit binary runs")
}

/// `qvit ARGS`, which must succeed, its JSON output read.
fn json_of(args: &[&str], isa: Option<&str>) -> Value {
    let out = qvit(args, isa);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("bench writes JSON")
}

/// `qvit bench` on the micro model, briefly, as JSON.
fn bench(isa: Option<&str>) -> Value {
    json_of(
        &[
            "bench",
            "efficientvit-micro",
            "--batch",
            "1,2",
            "--seconds",
            "0.01",
            "--executors",
            "fp32,fake,int",
            "--threads",
            "2",
            "--format",
            "json",
        ],
        isa,
    )
}

#[test]
fn rows_are_read_against_the_peak_of_their_arithmetic() {
    let v = bench(None);
    assert_eq!(v["threads"], 2);
    let rows = v["results"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "three executors at two batch sizes");
    for row in rows {
        let executor = row["executor"].as_str().unwrap();
        let peak = match executor {
            "int" => &v["peaks"]["int8"],
            "fp32" | "fake-quant" => &v["peaks"]["fp32"],
            other => panic!("unexpected executor {other}"),
        };
        if peak.is_null() {
            assert!(row["share_of_peak"].is_null(), "{row}");
            continue;
        }
        assert_eq!(peak["threads"], 2, "the peak runs on the bench's threads");
        let (gmacs, peak) = (
            row["gmacs_per_second"].as_f64().unwrap(),
            peak["gmacs"].as_f64().unwrap(),
        );
        let share = row["share_of_peak"].as_f64().unwrap();
        assert!(share > 0.0 && (share - gmacs / peak).abs() < 1e-12, "{row}");
        if executor == "fp32" {
            assert_eq!(row["vs_fp32"], 1.0);
        }
    }
    // On x86-64 with AVX2 both peaks are measured, with the instruction the kernels use.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let int8 = v["peaks"]["int8"]["instruction"].as_str().unwrap();
        let expected = match v["int_kernels"].as_str().unwrap() {
            "avx512-vnni + amx" => "tdpbsud tmm",
            "avx512-vnni" => "vpdpbusd zmm",
            _ => "vpmaddwd ymm",
        };
        assert_eq!(int8, expected);
        assert!(v["peaks"]["fp32"]["gmacs"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn scalar_int_kernels_have_no_peak_to_be_read_against() {
    let v = bench(Some("scalar"));
    assert_eq!(v["int_kernels"], "scalar");
    assert_eq!(v["float_kernels"], "baseline");
    assert!(v["peaks"]["int8"].is_null());
    for row in v["results"].as_array().unwrap() {
        if row["executor"] == "int" {
            assert!(row["share_of_peak"].is_null(), "{row}");
        }
    }
}

/// `QVIT_ISA=avx2` measures an AVX2-only machine: the integer kernels and the float ones both
/// stop at AVX2, and each peak is read with the instruction those kernels use.
#[test]
fn the_avx2_cap_holds_both_executors_to_avx2() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        let v = bench(Some("avx2"));
        assert_eq!(v["int_kernels"], "avx2");
        assert_eq!(v["float_kernels"], "avx2-fma");
        assert_eq!(v["peaks"]["int8"]["instruction"], "vpmaddwd ymm");
        assert_eq!(v["peaks"]["fp32"]["instruction"], "vfmadd231ps ymm");
        return;
    }
    eprintln!("the_avx2_cap_holds_both_executors_to_avx2: SKIPPED, this CPU has no AVX2 + FMA");
}

/// `QVIT_ISA=avx512vnni` measures a machine without AMX: the products on VNNI, read against
/// `vpdpbusd`'s peak.
#[test]
fn the_avx512_cap_keeps_the_products_off_amx() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512vnni")
        && std::arch::is_x86_feature_detected!("avx512bw")
    {
        let v = bench(Some("avx512vnni"));
        assert_eq!(v["int_kernels"], "avx512-vnni");
        assert_eq!(v["peaks"]["int8"]["instruction"], "vpdpbusd zmm");
        return;
    }
    eprintln!("the_avx512_cap_keeps_the_products_off_amx: SKIPPED, this CPU has no AVX-512 VNNI");
}

/// A brief `qvit bench` of the fp32 executor on the DeiT micro model, as a table.
fn fp32_table(isa: Option<&str>) -> Output {
    let args = [
        "bench",
        "deit-micro",
        "--batch",
        "1",
        "--seconds",
        "0.01",
        "--executors",
        "fp32",
    ];
    qvit(&args, isa)
}

#[test]
fn an_unknown_isa_is_reported_not_ignored() {
    let out = fp32_table(Some("avx3"));
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("QVIT_ISA=\"avx3\" is not one of"), "{err}");
}

#[test]
fn the_table_names_the_peaks() {
    let out = fp32_table(None);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("of peak"), "{text}");
    assert!(text.contains("peaks on these threads: fp32 "), "{text}");
}

#[test]
fn a_batch_of_zero_is_refused() {
    let out = qvit(&["bench", "deit-micro", "--batch", "0"], None);
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("--batch"), "{err}");
}

/// `--steps` times every step of the integer program on one image: in the JSON, one entry per
/// step with its kind and a positive time; in the table, the time by kind of step and the
/// slowest steps.
#[test]
fn steps_time_every_step_of_the_integer_program() {
    let args = |format: &'static str| {
        [
            "bench",
            "efficientvit-micro",
            "--batch",
            "1",
            "--seconds",
            "0.01",
            "--executors",
            "int",
            "--steps",
            "--format",
            format,
        ]
    };
    let v = json_of(&args("json"), None);
    let reports = v["steps"].as_array().unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0]["model"], "efficientvit-micro");
    assert_eq!(reports[0]["executor"], "int");
    assert!(reports[0]["rounds"].as_u64().unwrap() >= 3);
    let steps = reports[0]["steps"].as_array().unwrap();
    // The micro EfficientViT's program: 47 steps, its stem a 3×3 conv on 14×14, its head
    // linear layers on one token.
    assert_eq!(steps.len(), 47);
    assert!(steps.iter().all(|s| s["seconds"].as_f64().unwrap() > 0.0));
    assert_eq!(steps[0]["kind"], "3×3 conv");
    assert_eq!(steps[0]["shape"], "14×14");
    assert!(steps[0]["macs"].as_u64().unwrap() > 0);
    // A step without weights has no MACs of its own.
    let add = steps.iter().find(|s| s["kind"] == "add").unwrap();
    assert_eq!(add["macs"], 0);
    assert_eq!(steps[46]["kind"], "linear");
    assert_eq!(steps[46]["shape"], "1 token");
    let out = qvit(&args("table"), None);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("the int executor's 47 steps on one image"),
        "{text}"
    );
    assert!(
        text.contains("step kind") && text.contains("of MACs") && text.contains("slowest steps:"),
        "{text}"
    );
    assert!(text.contains("depthwise 3×3"), "{text}");
}

/// `--steps` with the fp32 executor times its graph's nodes on one image, beside the int
/// executor's steps in the same run: the nodes that compute (a conv's fused Hardswish and its
/// folded BatchNorm are its own time), named and sized as the int executor's steps are.
#[test]
fn steps_time_the_fp32_executors_nodes_beside_the_int_steps() {
    let v = json_of(
        &[
            "bench",
            "efficientvit-micro",
            "--batch",
            "1",
            "--seconds",
            "0.01",
            "--executors",
            "fp32,fake,int",
            "--steps",
            "--format",
            "json",
        ],
        None,
    );
    let reports = v["steps"].as_array().unwrap();
    let executors: Vec<&str> = reports
        .iter()
        .map(|r| r["executor"].as_str().unwrap())
        .collect();
    assert_eq!(executors, ["fp32", "int"]);
    let steps = reports[0]["steps"].as_array().unwrap();
    // The micro EfficientViT's graph: 48 nodes that compute (its head's Hardswish after the
    // LayerNorm is the one no conv applies).
    assert_eq!(steps.len(), 48);
    assert_eq!(steps[0]["kind"], "3×3 conv");
    assert_eq!(steps[0]["shape"], "14×14");
    assert_eq!(steps[0]["name"], "backbone.input_stem.op_list.0.conv");
    assert!(steps[0]["macs"].as_u64().unwrap() > 0);
    assert!(steps.iter().all(|s| s["seconds"].as_f64().unwrap() >= 0.0));
    assert!(steps.iter().all(|s| s["kind"] != "batch_norm"));
    // The weighted layers' MACs are the same in both executors' reports.
    let macs = |r: &Value| -> u64 {
        r["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["macs"].as_u64().unwrap())
            .sum()
    };
    assert_eq!(macs(&reports[0]), macs(&reports[1]));
}

#[test]
fn steps_need_an_executor_they_time() {
    let out = qvit(
        &["bench", "deit-micro", "--executors", "fake", "--steps"],
        None,
    );
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--steps") && err.contains("int") && err.contains("fp32"),
        "{err}"
    );
}
