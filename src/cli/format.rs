//! Output formats shared by the subcommands.

use clap::ValueEnum;

/// How a command prints a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for reading.
    Table,
    /// One JSON document for scripts.
    Json,
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A borderless table with a rule under the header and right-aligned numeric columns.
pub fn table(header: &[&str], numeric: &[usize]) -> comfy_table::Table {
    use comfy_table::{CellAlignment, ContentArrangement, LineStyle, Table, TableStyle};
    const STYLE: TableStyle =
        TableStyle::new().header_separator(LineStyle::none().fill('─').junction(' '));
    let mut t = Table::new();
    t.load_style(STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for &col in numeric {
        if let Some(c) = t.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    t
}

/// Writes a command's whole output to stdout. A reader that stops early (`qvit info … | head`)
/// closes the pipe; that is not an error.
pub fn emit(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn groups_digits_by_three() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(519_214_592), "519,214,592");
    }
}
