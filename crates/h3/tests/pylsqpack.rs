//! QPACK against pylsqpack (the QPACK library of aioquic) in both directions, through
//! tests/python/qpack_peer.py in the virtualenv that scripts/setup-test-deps creates.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pylon_h3::qpack::{FieldLine, decode_field_section, encode_field_section, static_table};
use serde_json::{Value, json};

const LIMIT: u64 = 1 << 20;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("PYLON_TEST_PYTHON") {
        return PathBuf::from(path);
    }
    let venv = repo_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "missing {}: run scripts/setup-test-deps first (or set PYLON_TEST_PYTHON)",
        venv.display()
    );
    venv
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// Runs the Python peer on one request and returns its JSON output.
fn run_peer(request: &Value) -> Value {
    let mut child = Command::new(python())
        .arg(repo_root().join("tests/python/qpack_peer.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("failed to start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(request.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "qpack_peer.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Field sections that cover the static table, Huffman-friendly and Huffman-hostile
/// strings, binary values and lengths that need multi-byte integers.
fn sample_sections() -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut sections = Vec::new();
    let every_static: Vec<(Vec<u8>, Vec<u8>)> = static_table::ENTRIES
        .iter()
        .map(|(name, value)| (name.as_bytes().to_vec(), value.as_bytes().to_vec()))
        .collect();
    sections.push(every_static);
    sections.push(vec![
        (b":method".to_vec(), b"CONNECT".to_vec()),
        (b":protocol".to_vec(), b"websocket".to_vec()),
        (b":scheme".to_vec(), b"https".to_vec()),
        (b":authority".to_vec(), b"localhost:8443".to_vec()),
        (
            b":path".to_vec(),
            b"/ws/chat?room=lobby&user=a%20b".to_vec(),
        ),
        (b"sec-websocket-version".to_vec(), b"13".to_vec()),
        (
            b"sec-websocket-extensions".to_vec(),
            b"permessage-deflate; client_max_window_bits".to_vec(),
        ),
        (b"origin".to_vec(), b"https://www.example.com".to_vec()),
    ]);
    sections.push(vec![
        (b":status".to_vec(), b"200".to_vec()),
        (b":status".to_vec(), b"426".to_vec()),
        (b"x-binary".to_vec(), (0..=255).collect()),
        (b"x-long".to_vec(), vec![b'q'; 5000]),
        (vec![b'n'; 300], b"long name".to_vec()),
        (b"x-empty".to_vec(), Vec::new()),
        (b"cookie".to_vec(), b"a=1; b=2".to_vec()),
    ]);
    sections
}

fn as_lines(section: &[(Vec<u8>, Vec<u8>)]) -> Vec<FieldLine> {
    section
        .iter()
        .map(|(name, value)| FieldLine::new(name.clone(), value.clone()))
        .collect()
}

#[test]
fn pylon_decodes_pylsqpack_sections() {
    let sections = sample_sections();
    let request = json!({
        "encode": sections
            .iter()
            .map(|section| section.iter().map(|(name, value)| json!([hex(name), hex(value)])).collect::<Vec<_>>())
            .collect::<Vec<_>>(),
    });
    let answer = run_peer(&request);
    let encoded = answer["encoded"].as_array().unwrap();
    assert_eq!(encoded.len(), sections.len());
    for (index, (section, bytes)) in sections.iter().zip(encoded).enumerate() {
        let decoded = decode_field_section(&unhex(bytes.as_str().unwrap()), LIMIT)
            .unwrap_or_else(|error| panic!("section {index}: {error}"));
        assert_eq!(decoded, as_lines(section), "section {index}");
    }
}

#[test]
fn pylsqpack_decodes_pylon_sections() {
    let sections = sample_sections();
    let encoded: Vec<String> = sections
        .iter()
        .map(|section| {
            hex(&encode_field_section(
                section
                    .iter()
                    .map(|(name, value)| (name.as_slice(), value.as_slice())),
            ))
        })
        .collect();
    let answer = run_peer(&json!({ "decode": encoded }));
    let decoded = answer["decoded"].as_array().unwrap();
    for (index, (section, lines)) in sections.iter().zip(decoded).enumerate() {
        let lines: Vec<(Vec<u8>, Vec<u8>)> = lines
            .as_array()
            .unwrap_or_else(|| panic!("section {index}: pylsqpack failed: {lines}"))
            .iter()
            .map(|pair| {
                (
                    unhex(pair[0].as_str().unwrap()),
                    unhex(pair[1].as_str().unwrap()),
                )
            })
            .collect();
        assert_eq!(&lines, section, "section {index}");
    }
}

#[test]
fn static_indices_match_pylsqpack() {
    // For an exact static match both encoders must emit the same indexed field line,
    // which checks every index of the transcribed table.
    let sections: Vec<Value> = static_table::ENTRIES
        .iter()
        .map(|(name, value)| json!([[hex(name.as_bytes()), hex(value.as_bytes())]]))
        .collect();
    let answer = run_peer(&json!({ "encode": sections }));
    for (index, (entry, bytes)) in static_table::ENTRIES
        .iter()
        .zip(answer["encoded"].as_array().unwrap())
        .enumerate()
    {
        let ours = encode_field_section([(entry.0.as_bytes(), entry.1.as_bytes())]);
        assert_eq!(
            hex(&ours),
            bytes.as_str().unwrap(),
            "static index {index} {entry:?}"
        );
    }
}

#[test]
fn pylsqpack_rejects_what_pylon_rejects() {
    // Sections with a dynamic table reference: both decoders must fail.
    let sections = ["0000 80", "0000 10", "0100 c1"];
    for section in sections {
        let bytes = unhex(&section.replace(' ', ""));
        assert!(decode_field_section(&bytes, LIMIT).is_err(), "{section}");
    }
    let answer = run_peer(
        &json!({ "decode": sections.iter().map(|s| s.replace(' ', "")).collect::<Vec<_>>() }),
    );
    for (section, decoded) in sections.iter().zip(answer["decoded"].as_array().unwrap()) {
        assert!(
            decoded.get("error").is_some(),
            "pylsqpack accepted {section}: {decoded}"
        );
    }
}
