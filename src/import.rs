//! `candlewick import FILE.csv`: the bulk path from the command line.

use crate::config::ImportArgs;

pub async fn run(_args: ImportArgs) -> anyhow::Result<()> {
    anyhow::bail!("import is not available yet")
}
