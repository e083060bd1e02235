//! Writes docs/rules/<id>.md for every rule and the index docs/rules/README.md.
//! Run by `scripts/gen-rule-docs`; a test fails when a page is out of date.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/rules");
    std::fs::create_dir_all(&dir)?;
    let mut index = String::from(
        "# Lint rules\n\n`shipsafe lint` checks migration SQL with PostgreSQL's own parser. Each rule has a page: the problem, why it hurts in production, and the safe way.\n\n| rule | severity | catches |\n|---|---|---|\n",
    );
    for r in shipsafe_lint::rules::all() {
        std::fs::write(
            dir.join(format!("{}.md", r.id())),
            shipsafe_lint::rules::doc_page(r),
        )?;
        index.push_str(&format!(
            "| [{0}]({0}.md) | {1} | {2} |\n",
            r.id(),
            r.severity().as_str(),
            r.summary()
        ));
    }
    std::fs::write(dir.join("README.md"), index)?;
    Ok(())
}
