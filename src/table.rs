//! Plain-text tables for the command line: every column padded to its widest cell. Pure.

/// `rows` (the header first) as aligned lines, two spaces between columns, no trailing blanks.
pub fn render<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn columns_line_up() {
        let rows = [
            ["ID".to_owned(), "STATUS".to_owned()],
            ["a-long-id".to_owned(), "ok".to_owned()],
            ["b".to_owned(), "".to_owned()],
        ];
        assert_eq!(
            super::render(&rows),
            "ID         STATUS\na-long-id  ok\nb\n"
        );
    }
}
