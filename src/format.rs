//! Formatting shared by the API, CSV and the pages.

use chrono::{DateTime, SecondsFormat, Utc};

/// RFC 3339 in UTC with `Z`, sub-second digits only when present.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
