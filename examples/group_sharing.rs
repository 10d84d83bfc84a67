//! How often a group's Data-Code shares its files' chunks on real data: each argument is one
//! group, a directory (its files in iscc-sum's tree order) or a file; several files after
//! `--` make one group.
//! `cargo run --release --example group_sharing -- DIR... [-- FILE FILE...]`.
//!
//! For each group it prints the files whose own chain the group's chain met (chunked once for
//! both codes), those it never met (chunked twice), the empty ones, and the bytes the group's
//! chain walked itself.

use omero_iscc::engine::group;
use omero_iscc::engine::hash::HashConfig;
use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (dirs, files) = match args.iter().position(|a| a == "--") {
        Some(k) => (&args[..k], &args[k + 1..]),
        None => (&args[..], &[][..]),
    };
    let mut groups: Vec<(String, Vec<PathBuf>)> = Vec::new();
    let resolver = omero_iscc::inputs::Resolver::new(None).expect("no root to open");
    for arg in dirs {
        let path = PathBuf::from(arg);
        let members = if path.is_dir() {
            omero_iscc::inputs::tree_files(&path, &resolver).expect("a readable tree")
        } else {
            vec![path]
        };
        groups.push((arg.clone(), members));
    }
    if !files.is_empty() {
        groups.push((format!("{} files", files.len()), files.iter().map(PathBuf::from).collect()));
    }
    let config = HashConfig { parallel: true, mmap: true, ..HashConfig::default() };
    println!("| group | files | met | apart | empty | bytes walked by the group alone |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, members) in groups {
        let resolved: Vec<_> = members.iter().cloned().map(Ok).collect();
        let names: Vec<String> = members.iter().map(|p| p.display().to_string()).collect();
        let outcome = group::hash_group(&resolved, &names, &config, true);
        outcome.group.expect("every file of the group is readable");
        let s = outcome.sharing;
        let share = if s.bytes == 0 { 0.0 } else { 100.0 * s.walked as f64 / s.bytes as f64 };
        println!(
            "| {name} | {} | {} | {} | {} | {} of {} ({share:.2} %) |",
            members.len(),
            s.met,
            s.apart,
            s.empty,
            s.walked,
            s.bytes
        );
    }
}
