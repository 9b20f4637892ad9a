//! Problems found in the rows of a batch (a JSON array, a CSV body, an imported file).

use std::fmt;

/// How many problems a rejected batch reports (all are counted).
pub const MAX_REPORTED_ERRORS: usize = 10;

/// Collects row errors; any error rejects the whole batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowErrors {
    /// What a row is called in messages: `row` (JSON) or `line` (CSV).
    noun: &'static str,
    /// The first [`MAX_REPORTED_ERRORS`] problems, each naming its row or line.
    shown: Vec<String>,
    total: u64,
    /// How many rows the batch has (counted so far).
    rows: u64,
}

impl RowErrors {
    /// For JSON arrays: problems are `row N: …`.
    pub fn rows() -> Self {
        Self::new("row")
    }

    /// For CSV: problems are `line N: …`.
    pub fn lines() -> Self {
        Self::new("line")
    }

    fn new(noun: &'static str) -> Self {
        Self {
            noun,
            shown: Vec::new(),
            total: 0,
            rows: 0,
        }
    }

    /// A batch refused as a whole (no header, nothing in it).
    pub fn refused(mut self, msg: String) -> Self {
        self.push(msg);
        self
    }

    pub fn push(&mut self, msg: String) {
        self.total += 1;
        if self.shown.len() < MAX_REPORTED_ERRORS {
            self.shown.push(msg);
        }
    }

    /// Counts one more row of the batch (good or bad).
    pub fn count_row(&mut self) {
        self.rows += 1;
    }

    pub fn row_count(&self) -> u64 {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// Problems found so far (also those not shown).
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn shown(&self) -> &[String] {
        &self.shown
    }

    /// How many problems are not among [`Self::shown`].
    pub fn unreported(&self) -> u64 {
        self.total.saturating_sub(self.shown.len() as u64)
    }

    /// `Ok` when no row was bad.
    pub fn into_result(self) -> Result<(), Self> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// `3 of 3013 lines are invalid; nothing was written`.
    pub fn summary(&self) -> String {
        if self.rows == 0 {
            return "the input was refused; nothing was written".into();
        }
        let noun = match self.rows {
            1 => self.noun.to_owned(),
            _ => format!("{}s", self.noun),
        };
        let verb = if self.total == 1 { "is" } else { "are" };
        format!(
            "{} of {} {noun} {verb} invalid; nothing was written",
            self.total, self.rows
        )
    }
}

/// The summary, then the problems shown: one line for a JSON error or a log.
impl fmt::Display for RowErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.summary(), self.shown.join("; "))?;
        match self.unreported() {
            0 => Ok(()),
            n => write!(f, " (and {n} more)"),
        }
    }
}

impl std::error::Error for RowErrors {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stop_at_the_limit_but_count_everything() {
        let mut e = RowErrors::lines();
        for i in 0..25 {
            e.count_row();
            e.push(format!("line {}: bad", i + 2));
        }
        assert_eq!(e.shown().len(), MAX_REPORTED_ERRORS);
        assert_eq!(e.unreported(), 15);
        assert_eq!(
            e.summary(),
            "25 of 25 lines are invalid; nothing was written"
        );
        assert!(e.to_string().ends_with("(and 15 more)"), "{e}");
    }

    #[test]
    fn one_bad_row_reads_in_the_singular() {
        let mut e = RowErrors::rows();
        e.count_row();
        e.count_row();
        e.push("row 2: price is required".into());
        assert_eq!(
            e.to_string(),
            "1 of 2 rows is invalid; nothing was written: row 2: price is required"
        );
    }
}
