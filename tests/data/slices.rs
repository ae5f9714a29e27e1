//! Parsers and loaders for the real-data slices of `tests/data` (see its README), shared by the
//! tests (`tests/it/common/mod.rs` includes it with `#[path]`) and `examples/quickstart.rs`.
//!
//! CollegeMsg rows become `person` nodes known by `("collegemsg", user id)` and `messaged` edges
//! known by `("collegemsg", "row-N")`, valid from the message time. Git rows become `person`,
//! `commit` and `path` nodes with `authored` and `touched` edges.
#![allow(dead_code)]

use silograph::{EdgeInput, NodeId, NodeInput, Value, WriteTxn};

/// One CollegeMsg message: data row `row` (1-based) of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// 1-based data row number (the header is row 0).
    pub row: usize,
    /// Sender user id.
    pub src: u64,
    /// Recipient user id.
    pub dst: u64,
    /// Unix seconds.
    pub ts: i64,
}

/// One git commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// 40-hex commit id.
    pub sha: String,
    /// Pseudonymous author (16 hex digits of SHA-256 of the email).
    pub author: String,
    /// Author time, Unix seconds.
    pub author_ts: i64,
    /// Commit time, Unix seconds.
    pub commit_ts: i64,
}

/// One path touched by one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch {
    /// The commit.
    pub sha: String,
    /// Repository-relative path.
    pub path: String,
}

fn fields(line: &str, n: usize, lineno: usize) -> Result<Vec<&str>, String> {
    let f: Vec<&str> = line.split('\t').collect();
    if f.len() != n {
        return Err(format!("line {lineno}: expected {n} tab-separated fields, got {}", f.len()));
    }
    Ok(f)
}

fn int<T: std::str::FromStr>(s: &str, lineno: usize) -> Result<T, String> {
    s.parse().map_err(|_| format!("line {lineno}: `{s}` is not an integer"))
}

/// Data lines of a TSV text with its header checked, numbered from 1.
fn rows<'a>(text: &'a str, header: &str) -> Result<impl Iterator<Item = (usize, &'a str)>, String> {
    let mut lines = text.lines();
    match lines.next() {
        Some(h) if h == header => Ok(lines.enumerate().map(|(i, l)| (i + 1, l)).filter(|(_, l)| !l.is_empty())),
        other => Err(format!("unexpected header {other:?}")),
    }
}

/// Parses `collegemsg-*.tsv` (`src dst ts`).
pub fn parse_collegemsg(text: &str) -> Result<Vec<Message>, String> {
    rows(text, "src\tdst\tts")?
        .map(|(row, l)| {
            let f = fields(l, 3, row + 1)?;
            Ok(Message { row, src: int(f[0], row + 1)?, dst: int(f[1], row + 1)?, ts: int(f[2], row + 1)? })
        })
        .collect()
}

/// Parses `git-commits-*.tsv`.
pub fn parse_commits(text: &str) -> Result<Vec<Commit>, String> {
    rows(text, "commit_sha\tauthor_email_hash\tauthor_ts\tcommitter_email_hash\tcommit_ts")?
        .map(|(row, l)| {
            let f = fields(l, 5, row + 1)?;
            Ok(Commit {
                sha: f[0].to_owned(),
                author: f[1].to_owned(),
                author_ts: int(f[2], row + 1)?,
                commit_ts: int(f[4], row + 1)?,
            })
        })
        .collect()
}

/// Parses `git-touches-*.tsv`.
pub fn parse_touches(text: &str) -> Result<Vec<Touch>, String> {
    rows(text, "commit_sha\tpath")?
        .map(|(row, l)| {
            let f = fields(l, 2, row + 1)?;
            Ok(Touch { sha: f[0].to_owned(), path: f[1].to_owned() })
        })
        .collect()
}

/// The node of a CollegeMsg user.
pub fn user(w: &mut WriteTxn, id: u64) -> silograph::Result<NodeId> {
    w.upsert_node(NodeInput::new("person").source("collegemsg", id.to_string()))
}

/// Ingests messages: idempotent, by the users' ids and the messages' row numbers.
pub fn ingest_messages(w: &mut WriteTxn, messages: &[Message]) -> silograph::Result<()> {
    for m in messages {
        let a = user(w, m.src)?;
        let b = user(w, m.dst)?;
        let edge =
            EdgeInput::new(a, b, "messaged").valid_from(m.ts * 1000).source("collegemsg", format!("row-{}", m.row));
        w.add_edge(edge)?;
    }
    Ok(())
}

/// The node of a commit.
pub fn commit_node(w: &mut WriteTxn, c: &Commit) -> silograph::Result<NodeId> {
    w.upsert_node(
        NodeInput::new("commit")
            .source("git", c.sha.as_str())
            .prop("committed_at", Value::Timestamp(c.commit_ts * 1000)),
    )
}

/// Ingests commits (author —authored→ commit) and touches (commit —touched→ path): idempotent.
pub fn ingest_git(w: &mut WriteTxn, commits: &[Commit], touches: &[Touch]) -> silograph::Result<()> {
    let mut by_sha = std::collections::HashMap::new();
    for c in commits {
        let author = w.upsert_node(NodeInput::new("person").source("git-email-sha256", c.author.as_str()))?;
        let commit = commit_node(w, c)?;
        let edge = EdgeInput::new(author, commit, "authored")
            .valid_from(c.author_ts * 1000)
            .source("git", format!("authored/{}", c.sha));
        w.add_edge(edge)?;
        by_sha.insert(c.sha.as_str(), (commit, c.commit_ts));
    }
    for t in touches {
        let Some(&(commit, ts)) = by_sha.get(t.sha.as_str()) else { continue };
        let path = w.upsert_node(NodeInput::new("path").source("git-path", t.path.as_str()))?;
        let edge = EdgeInput::new(commit, path, "touched")
            .valid_from(ts * 1000)
            .source("git", format!("touched/{}/{}", t.sha, t.path));
        w.add_edge(edge)?;
    }
    Ok(())
}
