//! `freshet sql-test PATH...`: runs ksqlDB-format SQL test cases and reports each failure with
//! expected and actual records, then `N passed, M failed, K skipped`. Query-validation cases run
//! on the engine in memory; REST-format cases against a server over HTTP (`sqltest_rest`).

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use freshet_sql::testcase::{collect_files, run_file_with, Summary, Verdict};

#[derive(Args)]
pub struct SqlTestArgs {
    /// Test case files, or directories of them.
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Run only cases whose name or file contains this text.
    #[arg(long)]
    filter: Option<String>,
    /// Print passing and skipped cases too.
    #[arg(short, long)]
    verbose: bool,
    /// Print only the summary line and per-file counts, not each failure.
    #[arg(short, long)]
    quiet: bool,
    /// Exit with an error when fewer cases than this pass (a ratchet for CI).
    #[arg(long)]
    min_passed: Option<usize>,
    /// Keep each persistent query's state in a store file with a changelog, and restore it
    /// after every input record as if the server restarted there (checks that state survives
    /// restarts; slower).
    #[arg(long)]
    restore_every_step: bool,
}

pub fn run(args: SqlTestArgs) -> Result<()> {
    let files = collect_files(&args.paths)?;
    if files.is_empty() {
        bail!("no test case files under {:?}", args.paths);
    }
    freshet_sql::testcase::set_restore_every_step(args.restore_every_step);
    let mut total = Summary::default();
    let mut rest = crate::sqltest_rest::RestRunner::new()?;
    let mut run_rest = |case: &serde_json::Value, format: Option<&str>, config: Option<&serde_json::Value>| {
        rest.run(case, format, config)
    };
    for file in files {
        let results = run_file_with(&file, args.filter.as_deref(), Some(&mut run_rest));
        let mut summary = Summary::default();
        for r in &results {
            match &r.verdict {
                Verdict::Pass => {
                    summary.passed += 1;
                    if args.verbose {
                        println!("PASS {}: {}", r.file, r.name);
                    }
                }
                Verdict::Skip(why) => {
                    summary.skipped += 1;
                    if args.verbose {
                        println!("SKIP {}: {} ({why})", r.file, r.name);
                    }
                }
                Verdict::Fail(why) => {
                    summary.failed += 1;
                    if !args.quiet {
                        println!("FAIL {}: {}\n  {why}", r.file, r.name);
                    }
                }
            }
        }
        if !results.is_empty() {
            println!("# {}: {summary}", file.display());
        }
        total.passed += summary.passed;
        total.failed += summary.failed;
        total.skipped += summary.skipped;
    }
    println!("{total}");
    if let Some(min) = args.min_passed {
        if total.passed < min {
            bail!("{} cases passed, fewer than the required {min}", total.passed);
        }
    }
    Ok(())
}
