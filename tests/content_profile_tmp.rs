mod common;
#[path = "support/content_samples.rs"]
mod samples;
use common::*;
use moat_gateway::content::*;
use std::time::Instant;

#[test]
#[ignore]
fn profile() {
    let messages: Vec<Vec<u8>> = spamassassin_corpus()
        .iter()
        .map(CorpusMessage::raw)
        .collect();
    let bytes: usize = messages.iter().map(Vec::len).sum();
    let dir = TempDir::new("prof");
    let sig = dir.path().join("sig");
    std::fs::create_dir_all(&sig).unwrap();
    samples::write_signatures(&sig);
    let ndb = std::fs::read_to_string("/tmp/bench.ndb").unwrap_or_default();
    std::fs::write(sig.join("bench.ndb"), ndb).unwrap();
    let none = ContentScanner::load(ContentSettings::default()).unwrap();
    let with = ContentScanner::load(ContentSettings {
        signatures_dir: Some(sig.clone()),
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        for m in &messages {
            none.scan_builtin(m);
        }
        let a = t.elapsed();
        let t = Instant::now();
        for m in &messages {
            with.scan_builtin(m);
        }
        let b = t.elapsed();
        eprintln!(
            "{} MB: dissect only {:?}, with sigs {:?}",
            bytes / 1000000,
            a,
            b
        );
    }
}
