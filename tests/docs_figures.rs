//! Figures the README copies from generated documents are those documents' figures: every
//! accuracy row of the README's PTQ excerpts is, character for character, a row of the
//! `docs/results/` file `qvit ptq-table` wrote (the README names the file and the command
//! beside each excerpt). Regenerating a document without updating the README fails here.

use std::path::Path;

/// Table rows `| name | number | number | … |` with at least one numeric cell.
fn figure_rows(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.starts_with("| "))
        .filter(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            cells.len() > 3
                && cells[2..cells.len() - 1]
                    .iter()
                    .all(|c| c.parse::<f64>().is_ok())
        })
        .collect()
}

#[test]
fn the_readme_ptq_excerpts_are_rows_of_the_generated_documents() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let documents: Vec<String> = std::fs::read_dir(root.join("docs/results"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let rows = figure_rows(&readme);
    assert!(rows.len() >= 8, "the README's PTQ excerpts: {rows:?}");
    for row in rows {
        assert!(
            documents.iter().any(|d| d.lines().any(|l| l == row)),
            "README row `{row}` is in no docs/results document: regenerate the README's excerpt"
        );
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

fn qvit(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_qvit"))
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "qvit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The fenced block that follows the first line containing `marker`.
fn block_after<'a>(text: &'a str, marker: &str) -> Vec<&'a str> {
    let at = text.find(marker).unwrap_or_else(|| panic!("no `{marker}`"));
    text[at..]
        .lines()
        .skip_while(|l| !l.starts_with("```"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .collect()
}

/// Every figure `N.N…` in `text`, in order (digits with one decimal point, commas dropped).
fn figures(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .map(|w| w.replace(',', "").trim_matches('.').to_string())
        .filter_map(|w| w.parse().ok())
        .collect()
}

#[test]
fn the_readme_info_block_is_what_qvit_info_prints() {
    let readme = read("README.md");
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let printed = qvit(dir, &["info", "efficientvit-b1"]);
    for line in block_after(&readme, "`qvit info efficientvit-b1` ends with") {
        if line != "…" {
            assert!(
                printed.lines().any(|p| p.trim_end() == line.trim_end()),
                "README line `{line}` is not in `qvit info efficientvit-b1`:\n{printed}"
            );
        }
    }
}

#[test]
fn the_readme_ptq_prose_follows_its_documents() {
    let readme = read("README.md");
    // "trio-vit at W8A8 is 0.15 points below FP32": the excerpt's FP32 and trio-vit W8A8.
    let fp32 = figures(
        readme
            .split("An excerpt (efficientvit-micro, FP32")
            .nth(1)
            .unwrap(),
    )[0];
    let trio = readme
        .lines()
        .find(|l| l.starts_with("| trio-vit |"))
        .map(figures)
        .unwrap()[0];
    let gap = figures(readme.split("trio-vit at W8A8 is ").nth(1).unwrap())[0];
    assert!(
        (gap - (fp32 - trio)).abs() < 1e-9,
        "README says {gap} points; the excerpt gives {fp32} − {trio}"
    );
    // The channel spreads are the documents' measured ones.
    let fashion = read("docs/results/ptq-fashion-mnist.md");
    let spread = read("docs/results/ptq-efficientvit-micro-spread.md");
    let range = readme
        .split("than EfficientViT-B1's (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    assert!(
        fashion.contains(&format!("differ between channels by {range} ")),
        "README's `{range}` is not ptq-fashion-mnist.md's spread"
    );
    let most = readme
        .split("differ between channels by up to ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap();
    assert!(
        spread.contains(&format!("–{most} ")),
        "README's `{most}` is not ptq-efficientvit-micro-spread.md's largest spread"
    );
}

#[test]
fn the_readme_export_agreement_ranges_are_the_tables() {
    let readme = read("README.md");
    let export = read("docs/export.md");
    // Column `name` of docs/export.md's first agreement table, as percentages.
    let header = export
        .lines()
        .find(|l| l.starts_with("| model | recipe | bits | ORT op by op"))
        .unwrap();
    let names: Vec<&str> = header.split('|').map(str::trim).collect();
    let column = |name: &str| -> Vec<f64> {
        let at = names.iter().position(|n| *n == name).unwrap();
        export
            .lines()
            .skip_while(|l| *l != header)
            .skip(2)
            .take_while(|l| l.starts_with("| "))
            .map(|l| figures(l.split('|').nth(at).unwrap())[0])
            .collect()
    };
    let range = |values: Vec<f64>| {
        let lo = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = values.iter().cloned().fold(0.0, f64::max);
        let show = |v: f64| {
            if v == 100.0 {
                "100".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        format!("{}–{} %", show(lo), show(hi))
    };
    let ort = range(column("ORT op by op, qvit half-even"));
    let qonnx = range(column("qonnx, qvit half-up"));
    assert!(
        readme.contains(&format!("gives qvit's class on {ort} of")),
        "README's ONNX Runtime range is not docs/export.md's {ort}"
    );
    assert!(
        readme.contains(&format!("QONNX\nfile on {qonnx};"))
            || readme.contains(&format!("file on {qonnx};")),
        "README's qonnx range is not docs/export.md's {qonnx}"
    );
}

/// The README's figure counts the designs its sweep prices that fit the part: the space without
/// its accuracy section (which only adds top-1) gives the same rows.
#[test]
fn the_readme_figure_counts_its_sweeps_designs() {
    let readme = read("README.md");
    let said = figures(readme.split("![top-1 against FPS of ").nth(1).unwrap())[0] as usize;
    let space = read("presets/sweeps/micro-accuracy.ron");
    let priced_only: String = space
        .lines()
        .filter(|l| !l.trim_start().starts_with("accuracy:"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = std::env::temp_dir().join(format!("qvit-docs-figures-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("space.ron"), priced_only).unwrap();
    qvit(&dir, &["sweep", "space.ron", "--out", "all.csv"]);
    let csv = std::fs::read_to_string(dir.join("all.csv")).unwrap();
    let status = csv
        .lines()
        .next()
        .unwrap()
        .split(',')
        .position(|c| c == "status")
        .unwrap();
    let rows = csv
        .lines()
        .skip(1)
        .filter(|l| l.split(',').nth(status) == Some("ok"))
        .count();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(said, rows, "README's figure says {said} designs");
}
