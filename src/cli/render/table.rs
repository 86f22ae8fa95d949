//! Aligned text tables, with colour only when asked (on a terminal).

/// Colours used, sparingly: red for trouble, yellow for waiting, green for
/// done, magenta for a human's hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Red,
    Yellow,
    Green,
    Magenta,
    Dim,
    Bold,
}

/// Applies styles when enabled (stdout is a terminal and NO_COLOR unset).
#[derive(Debug, Clone, Copy)]
pub struct Paint(pub bool);

impl Paint {
    pub fn paint(self, style: Option<Style>, text: &str) -> String {
        let Some(style) = style.filter(|_| self.0) else {
            return text.to_string();
        };
        let code = match style {
            Style::Red => "31",
            Style::Yellow => "33",
            Style::Green => "32",
            Style::Magenta => "35",
            Style::Dim => "2",
            Style::Bold => "1",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }
}

/// One table cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub style: Option<Style>,
}

impl Cell {
    pub fn plain(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            style: None,
        }
    }

    pub fn styled(text: impl Into<String>, style: Option<Style>) -> Self {
        Self {
            text: text.into(),
            style,
        }
    }
}

/// Columns aligned on the text's width (styles do not count), two spaces
/// apart, the last column unpadded.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], paint: Paint) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.text.chars().count());
            }
        }
    }
    let line = |cells: Vec<(String, Option<Style>)>| -> String {
        let n = cells.len();
        let mut out = String::new();
        for (i, (text, style)) in cells.into_iter().enumerate() {
            let pad = if i + 1 < n {
                widths[i].saturating_sub(text.chars().count()) + 2
            } else {
                0
            };
            out.push_str(&paint.paint(style, &text));
            out.push_str(&" ".repeat(pad));
        }
        out.trim_end().to_string()
    };
    let mut out = line(
        headers
            .iter()
            .map(|h| (h.to_string(), Some(Style::Bold)))
            .collect(),
    );
    out.push('\n');
    for row in rows {
        out.push_str(&line(
            row.iter().map(|c| (c.text.clone(), c.style)).collect(),
        ));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_text_not_colour_codes() {
        let rows = vec![
            vec![Cell::styled("a", Some(Style::Red)), Cell::plain("x")],
            vec![Cell::plain("long"), Cell::plain("y")],
        ];
        let plain = table(&["H", "V"], &rows, Paint(false));
        assert_eq!(plain, "H     V\na     x\nlong  y\n");
        let coloured = table(&["H", "V"], &rows, Paint(true));
        assert!(coloured.contains("\x1b[31ma\x1b[0m     x"), "{coloured:?}");
    }
}
