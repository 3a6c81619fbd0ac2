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
