//! Reading the hex examples of `protocol.md` (format: its section 12).

use std::collections::BTreeMap;

/// One parsed ```` ```hex ```` block.
#[derive(Debug)]
pub struct Example {
    pub direction: String,
    pub frame: String,
    pub name: String,
    pub attrs: BTreeMap<String, String>,
    pub bytes: Vec<u8>,
}

pub fn parse_examples(doc: &str) -> Vec<Example> {
    let mut examples = Vec::new();
    let mut lines = doc.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        if line.trim_end() != "```hex" {
            assert!(
                !line.trim_start().starts_with("```hex"),
                "line {}: hex fence with extra text",
                n + 1
            );
            continue;
        }
        let (_, label) = lines.next().expect("label after ```hex");
        let mut words = label.split_whitespace();
        assert_eq!(
            words.next(),
            Some("#"),
            "line {}: label must start with '# '",
            n + 2
        );
        let direction = words.next().expect("direction").to_owned();
        assert!(
            direction == "c->s" || direction == "s->c",
            "line {}: bad direction {direction}",
            n + 2
        );
        let frame = words.next().expect("frame name").to_owned();
        let mut attrs = BTreeMap::new();
        for word in words {
            let (k, v) = word
                .split_once('=')
                .unwrap_or_else(|| panic!("line {}: bad label word {word}", n + 2));
            assert!(attrs.insert(k.to_owned(), v.to_owned()).is_none());
        }
        let name = attrs.remove("name").expect("every example has a name");
        let mut bytes = Vec::new();
        for (m, line) in lines.by_ref() {
            if line.trim_end() == "```" {
                break;
            }
            let hex = line.split('#').next().unwrap_or("");
            for pair in hex.split_whitespace() {
                assert!(pair.len() == 2, "line {}: {pair:?} is not one byte", m + 1);
                let byte = u8::from_str_radix(pair, 16)
                    .unwrap_or_else(|_| panic!("line {}: {pair:?} is not hex", m + 1));
                bytes.push(byte);
            }
        }
        examples.push(Example {
            direction,
            frame,
            name,
            attrs,
            bytes,
        });
    }
    examples
}

/// Every example of the `protocol.md` next to `Cargo.toml`.
pub fn load() -> Vec<Example> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/protocol.md");
    let doc = std::fs::read_to_string(path).expect("read protocol.md");
    parse_examples(&doc)
}
