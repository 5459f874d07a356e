//! XML from outside, read safely: bounded in size and nodes, UTF-8 only,
//! and no document type declaration at all (so no external entity and no
//! entity expansion: XXE and "billion laughs" are refused before a single
//! entity is read). Then small helpers that name the element at fault.

use roxmltree::{Document, Node, ParsingOptions};

/// Largest XML document taken (an EBD or a CAP alert; audio travels
/// beside it, not in it).
pub const MAX_XML_BYTES: usize = 1 << 20;
/// Most nodes in one document.
pub const MAX_NODES: u32 = 20_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("{what}: {len} bytes; the limit is {max}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0}: not UTF-8 text")]
    NotUtf8(&'static str),
    #[error("{0}: a document type declaration (DTD) is refused: no entities are read")]
    Dtd(&'static str),
    #[error("{what}: not well-formed XML: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("{0}: missing")]
    Missing(String),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
}

/// Parses `bytes` as the document `what` (its name in errors).
pub fn parse<'a>(bytes: &'a [u8], what: &'static str) -> Result<Document<'a>, XmlError> {
    parse_up_to(bytes, what, MAX_XML_BYTES)
}

/// As [`parse`], for a document of at most `max` bytes.
pub fn parse_up_to<'a>(
    bytes: &'a [u8],
    what: &'static str,
    max: usize,
) -> Result<Document<'a>, XmlError> {
    if bytes.len() > max {
        return Err(XmlError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|_| XmlError::NotUtf8(what))?;
    // Refused before parsing: roxmltree would refuse it too, but the
    // reason should say so plainly.
    if text.contains("<!DOCTYPE") || text.contains("<!ENTITY") {
        return Err(XmlError::Dtd(what));
    }
    let options = ParsingOptions {
        allow_dtd: false,
        nodes_limit: MAX_NODES,
        ..ParsingOptions::default()
    };
    Document::parse_with_options(text, options).map_err(|e| XmlError::Malformed {
        what,
        detail: e.to_string(),
    })
}

/// The first child element of `node` named `name` (any namespace).
pub fn child<'a, 'input>(node: Node<'a, 'input>, name: &str) -> Option<Node<'a, 'input>> {
    node.children()
        .find(|c| c.is_element() && c.tag_name().name() == name)
}

/// Every child element of `node` named `name`.
pub fn children<'a, 'input>(
    node: Node<'a, 'input>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'input>> + 'a {
    node.children()
        .filter(move |c| c.is_element() && c.tag_name().name() == name)
}

/// The trimmed text of `node`'s child `name`, if present and not empty.
pub fn text(node: Node<'_, '_>, name: &str) -> Option<String> {
    let t = child(node, name)?.text().unwrap_or("").trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// As [`text`], but missing is an error naming `path`.
pub fn required(node: Node<'_, '_>, name: &str, path: &str) -> Result<String, XmlError> {
    text(node, name).ok_or_else(|| XmlError::Missing(format!("{path}/{name}")))
}

/// At most `max` bytes, else an error naming `path`.
pub fn bounded(value: String, max: usize, path: &str) -> Result<String, XmlError> {
    if value.len() > max {
        return Err(XmlError::Invalid {
            field: path.to_string(),
            detail: format!("{} bytes; the limit is {max}", value.len()),
        });
    }
    Ok(value)
}

pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> XmlError {
    XmlError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

/// Text escaped for an element's content or an attribute.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab and newlines are not XML.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_dtds_are_refused_before_anything_is_read() {
        let xxe = br#"<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>"#;
        assert_eq!(parse(xxe, "EBD").unwrap_err(), XmlError::Dtd("EBD"));
        let laughs = br#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY l0 "ha"><!ENTITY l1 "&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;&l0;">]><l>&l1;</l>"#;
        assert_eq!(parse(laughs, "alert").unwrap_err(), XmlError::Dtd("alert"));
        // An undeclared entity is not expanded either.
        assert!(matches!(
            parse(b"<a>&x;</a>", "a"),
            Err(XmlError::Malformed { .. })
        ));
    }

    #[test]
    fn size_nodes_and_encoding_are_bounded() {
        let big = vec![b' '; MAX_XML_BYTES + 1];
        assert!(matches!(parse(&big, "EBD"), Err(XmlError::TooLarge { .. })));
        let many = format!("<a>{}</a>", "<b/>".repeat(MAX_NODES as usize + 1));
        assert!(matches!(
            parse(many.as_bytes(), "EBD"),
            Err(XmlError::Malformed { .. })
        ));
        assert_eq!(
            parse(&[0xFF, 0xFE, 0x3C], "EBD").unwrap_err(),
            XmlError::NotUtf8("EBD")
        );
    }

    #[test]
    fn escaping_leaves_no_markup() {
        assert_eq!(
            escape("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
