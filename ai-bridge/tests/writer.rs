//! The writer against real yrs documents: the answer's structure, every intermediate state,
//! people typing at the insertion point, suggestions, and reverts after reloads.

use std::sync::Arc;

use chorus_ai_bridge::revert::revert;
use chorus_ai_bridge::standin::{SAMPLE_ANSWER, tokenize};
use chorus_ai_bridge::writer::{DocWriter, Place, Schema, accept, keep, keep_text, unmark_text};
use yrs::types::xml::{XmlFragmentRef, XmlOut};
use yrs::updates::decoder::Decode;
use yrs::{
    Assoc, Doc, GetString, IndexedSequence, ReadTxn, StateVector, Text, Transact, Update,
    XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

fn doc(client: u64) -> Doc {
    Doc::with_client_id(client)
}

/// Sends everything `from` has that `to` lacks.
fn sync(from: &Doc, to: &Doc) {
    let sv = to.transact().state_vector();
    let update = from.transact().encode_state_as_update_v1(&sv);
    to.transact_mut()
        .apply_update(Update::decode_v1(&update).expect("decode"))
        .expect("apply");
}

fn both_ways(a: &Doc, b: &Doc) {
    sync(a, b);
    sync(b, a);
}

const BLOCKS: [&str; 7] = [
    "paragraph",
    "heading",
    "bulletList",
    "orderedList",
    "codeBlock",
    "blockquote",
    "horizontalRule",
];

/// Checks the fragment against Tiptap StarterKit's content rules (as far as the writer uses
/// them): top level holds blocks; lists hold list items holding paragraphs; quotes hold
/// paragraphs; text blocks hold only text.
fn assert_starterkit<T: ReadTxn>(txn: &T, f: &XmlFragmentRef) {
    for node in f.children(txn) {
        let XmlOut::Element(el) = node else {
            panic!("text at the top level")
        };
        let tag = el.tag().to_string();
        assert!(BLOCKS.contains(&tag.as_str()), "unknown block {tag}");
        let kids: Vec<XmlOut> = el.children(txn).collect();
        match tag.as_str() {
            "paragraph" | "heading" | "codeBlock" => {
                assert!(kids.iter().all(|k| matches!(k, XmlOut::Text(_))), "{tag}")
            }
            "horizontalRule" => assert!(kids.is_empty()),
            "bulletList" | "orderedList" => {
                assert!(!kids.is_empty(), "empty list");
                for item in kids {
                    let XmlOut::Element(item) = item else {
                        panic!("text in a list")
                    };
                    assert_eq!(item.tag().as_ref(), "listItem");
                    for p in item.children(txn) {
                        let XmlOut::Element(p) = p else {
                            panic!("text in a list item")
                        };
                        assert_eq!(p.tag().as_ref(), "paragraph");
                    }
                }
            }
            "blockquote" => {
                for p in kids {
                    let XmlOut::Element(p) = p else {
                        panic!("text in a quote")
                    };
                    assert_eq!(p.tag().as_ref(), "paragraph");
                }
            }
            _ => unreachable!(),
        }
    }
}

fn stream_into(ai: &Doc, f: &XmlFragmentRef, place: Place, pieces: &[String], check: bool) {
    let mut w = {
        let mut txn = ai.transact_mut();
        DocWriter::xml(
            &mut txn,
            f.clone(),
            &place,
            Arc::new(Schema::default()),
            yrs::OffsetKind::Bytes,
            None,
        )
        .expect("writer")
    };
    for piece in pieces {
        w.push(&mut ai.transact_mut(), piece);
        if check {
            assert_starterkit(&ai.transact(), f);
        }
    }
    w.finish(&mut ai.transact_mut());
    assert_starterkit(&ai.transact(), f);
}

#[test]
fn a_formatted_answer_becomes_starterkit_structure_valid_at_every_step() {
    let ai = doc(7);
    let f = ai.get_or_insert_xml_fragment("default");
    stream_into(&ai, &f, Place::End, &tokenize(SAMPLE_ANSWER, 3), true);
    let xml = f.get_string(&ai.transact());
    assert_eq!(
        xml,
        "<heading level=\"1\">A heading</heading>\
         <paragraph>A paragraph with <bold>bold</bold>, <italic>italic</italic>, <code>code</code> and a <link href=\"https://example.com/docs\">link</link>.</paragraph>\
         <heading level=\"2\">A list</heading>\
         <bulletList><listItem><paragraph>first point</paragraph></listItem><listItem><paragraph>second point with <bold>emphasis</bold></paragraph></listItem></bulletList>\
         <orderedList start=\"1\"><listItem><paragraph>step one</paragraph></listItem><listItem><paragraph>step two</paragraph></listItem></orderedList>\
         <blockquote><paragraph>a quotation</paragraph></blockquote>\
         <codeBlock language=\"rust\">fn main() {\n    println!(\"hi\");\n}</codeBlock>\
         <paragraph>The end.</paragraph>"
    );
}

#[test]
fn people_typing_at_the_insertion_point_keep_their_text_and_the_answer_stays_whole() {
    let person = doc(1);
    let ai = doc(2);
    let pf = person.get_or_insert_xml_fragment("default");
    let af = ai.get_or_insert_xml_fragment("default");
    {
        let mut txn = person.transact_mut();
        let p = pf.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("Before."));
        let p = pf.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("After."));
    }
    both_ways(&person, &ai);
    // The asker's cursor: in the first paragraph.
    let pos = {
        let txn = ai.transact();
        let Some(XmlOut::Element(p)) = af.get(&txn, 0) else {
            panic!()
        };
        let Some(XmlOut::Text(t)) = p.get(&txn, 0) else {
            panic!()
        };
        t.sticky_index(&txn, 3, Assoc::After).expect("pos")
    };
    let answer = "Alpha beta gamma delta epsilon zeta eta theta.";
    let mut w = DocWriter::xml(
        &mut ai.transact_mut(),
        af.clone(),
        &Place::At(pos),
        Arc::new(Schema::default()),
        yrs::OffsetKind::Bytes,
        None,
    )
    .expect("writer");
    let typed: String = (0..200).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    let mut typed_so_far = 0;
    for piece in tokenize(answer, 2) {
        w.push(&mut ai.transact_mut(), &piece);
        both_ways(&ai, &person);
        // The person types right after the answer's end, 9 characters per commit.
        let txn = person.transact();
        let Some(XmlOut::Element(p)) = pf.get(&txn, 1) else {
            panic!("the answer's paragraph")
        };
        drop(txn);
        let mut txn = person.transact_mut();
        if let Some(XmlOut::Text(t)) = p.get(&txn, 0) {
            let end = t.len(&txn);
            let n = 9.min(200 - typed_so_far);
            t.insert(&mut txn, end, &typed[typed_so_far..typed_so_far + n]);
            typed_so_far += n;
        }
        drop(txn);
        both_ways(&person, &ai);
    }
    w.finish(&mut ai.transact_mut());
    both_ways(&ai, &person);
    let xml = pf.get_string(&person.transact());
    assert_eq!(xml, af.get_string(&ai.transact()), "converged");
    assert!(xml.starts_with("<paragraph>Before.</paragraph><paragraph>"));
    assert!(xml.ends_with("<paragraph>After.</paragraph>"));
    // The answer in one piece, and every character the person typed, in order.
    let middle = xml
        .trim_start_matches("<paragraph>Before.</paragraph><paragraph>")
        .trim_end_matches("</paragraph><paragraph>After.</paragraph>");
    assert!(middle.contains(answer), "answer split: {middle}");
    let rest = middle.replacen(answer, "", 1);
    assert_eq!(rest, typed[..typed_so_far]);
    assert!(typed_so_far > 0);
}

#[test]
fn revert_removes_exactly_the_runs_items_after_interleaved_edits_and_a_reload() {
    let person = doc(1);
    let ai = doc(4_000_000_001);
    let pf = person.get_or_insert_xml_fragment("default");
    {
        let mut txn = person.transact_mut();
        let p = pf.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("Mine."));
    }
    sync(&person, &ai);
    let af = ai.get_or_insert_xml_fragment("default");
    let pos = {
        let txn = ai.transact();
        let Some(XmlOut::Element(p)) = af.get(&txn, 0) else {
            panic!()
        };
        let Some(XmlOut::Text(t)) = p.get(&txn, 0) else {
            panic!()
        };
        t.sticky_index(&txn, 5, Assoc::Before).expect("pos")
    };
    stream_into(&ai, &af, Place::At(pos), &tokenize(SAMPLE_ANSWER, 4), false);
    sync(&ai, &person);
    // The person types inside the answer's first paragraph and adds a block after it.
    {
        let txn = person.transact();
        let Some(XmlOut::Element(p)) = pf.get(&txn, 2) else {
            panic!()
        };
        drop(txn);
        let mut txn = person.transact_mut();
        let Some(XmlOut::Text(t)) = p.get(&txn, 0) else {
            panic!()
        };
        t.insert(&mut txn, 0, "[note] ");
        let p = pf.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("Later."));
    }
    // A reload: the state as stored, into a fresh replica with another client id.
    let stored = person
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let reverter = doc(99);
    let rf = reverter.get_or_insert_xml_fragment("default");
    reverter
        .transact_mut()
        .apply_update(Update::decode_v1(&stored).expect("decode"))
        .expect("apply");
    let update = {
        let mut txn = reverter.transact_mut();
        assert!(revert(&mut txn, 4_000_000_001, std::slice::from_ref(&rf)).expect("revert"));
        txn.encode_update_v1()
    };
    person
        .transact_mut()
        .apply_update(Update::decode_v1(&update).expect("decode"))
        .expect("apply");
    let xml = pf.get_string(&person.transact());
    // The person's text inside the run's paragraph stays (the paragraph with it); the rest
    // of the run is gone.
    assert_eq!(
        xml,
        "<paragraph>Mine.</paragraph><paragraph>[note] </paragraph><paragraph>Later.</paragraph>"
    );
    assert_starterkit(&person.transact(), &pf);
}

#[test]
fn suggestions_carry_the_runs_mark_until_accepted() {
    let ai = doc(5);
    let f = ai.get_or_insert_xml_fragment("default");
    let mut w = DocWriter::xml(
        &mut ai.transact_mut(),
        f.clone(),
        &Place::End,
        Arc::new(Schema::default()),
        yrs::OffsetKind::Bytes,
        Some(Arc::from("run1")),
    )
    .expect("writer");
    for piece in tokenize("Hello **there**.\n\n- x", 3) {
        w.push(&mut ai.transact_mut(), &piece);
    }
    w.finish(&mut ai.transact_mut());
    let before = f.get_string(&ai.transact());
    assert!(before.contains("aiSuggestion"), "{before}");
    let changed = accept(&mut ai.transact_mut(), &f, &Schema::default(), "run1");
    assert!(changed > 0);
    let after = f.get_string(&ai.transact());
    assert!(!after.contains("aiSuggestion"), "{after}");
    assert_eq!(
        after,
        "<paragraph>Hello <bold>there</bold>.</paragraph><bulletList><listItem><paragraph>x</paragraph></listItem></bulletList>"
    );
    // Another run's suggestion is untouched by this accept.
    assert_eq!(
        accept(&mut ai.transact_mut(), &f, &Schema::default(), "run2"),
        0
    );
}

#[test]
fn a_text_target_gets_the_answer_as_text_at_the_position() {
    let person = doc(1);
    let t = person.get_or_insert_text("code");
    t.insert(&mut person.transact_mut(), 0, "let a = 1;\nlet b = 2;");
    let ai = doc(3);
    sync(&person, &ai);
    let at = ai.get_or_insert_text("code");
    let pos = at
        .sticky_index(&ai.transact(), 10, Assoc::After)
        .expect("pos");
    let mut w = DocWriter::text(
        &mut ai.transact_mut(),
        at.clone(),
        &Place::At(pos),
        yrs::OffsetKind::Bytes,
        None,
    )
    .expect("writer");
    for piece in tokenize(" // **one**", 2) {
        w.push(&mut ai.transact_mut(), &piece);
    }
    w.finish(&mut ai.transact_mut());
    assert_eq!(
        at.get_string(&ai.transact()),
        "let a = 1; // **one**\nlet b = 2;"
    );
}

#[test]
fn a_range_is_replaced_by_the_answer() {
    let ai = doc(3);
    let t = ai.get_or_insert_text("code");
    t.insert(&mut ai.transact_mut(), 0, "keep OLD keep");
    let (a, b) = {
        let txn = ai.transact();
        (
            t.sticky_index(&txn, 5, Assoc::After).expect("a"),
            t.sticky_index(&txn, 8, Assoc::Before).expect("b"),
        )
    };
    let mut w = DocWriter::text(
        &mut ai.transact_mut(),
        t.clone(),
        &Place::Replace(a, b),
        yrs::OffsetKind::Bytes,
        None,
    )
    .expect("writer");
    for piece in tokenize("new text", 3) {
        w.push(&mut ai.transact_mut(), &piece);
    }
    assert_eq!(t.get_string(&ai.transact()), "keep new text keep");
    // Ends in different texts are refused, with nothing changed.
    let other = ai.get_or_insert_text("other");
    other.insert(&mut ai.transact_mut(), 0, "x");
    let (a, b) = {
        let txn = ai.transact();
        (
            t.sticky_index(&txn, 0, Assoc::After).expect("a"),
            other.sticky_index(&txn, 1, Assoc::Before).expect("b"),
        )
    };
    let err = DocWriter::text(
        &mut ai.transact_mut(),
        t.clone(),
        &Place::Replace(a, b),
        yrs::OffsetKind::Bytes,
        None,
    )
    .expect_err("two texts");
    assert_eq!(err, chorus_ai_bridge::writer::WriteError::BadRange);
    assert_eq!(t.get_string(&ai.transact()), "keep new text keep");
}

#[test]
fn a_suggested_replacement_keeps_the_range_until_accepted_and_rejecting_keeps_it() {
    let schema = Schema::default();
    for accepted in [true, false] {
        // A person's text; the run (another client) suggests replacing "OLD".
        let person = doc(1);
        let pt = person.get_or_insert_text("code");
        pt.insert(&mut person.transact_mut(), 0, "keep OLD keep");
        let ai = doc(7);
        sync(&person, &ai);
        let t = ai.get_or_insert_text("code");
        let place = {
            let txn = ai.transact();
            Place::Replace(
                t.sticky_index(&txn, 5, Assoc::After).expect("a"),
                t.sticky_index(&txn, 8, Assoc::Before).expect("b"),
            )
        };
        let mut w = DocWriter::text(
            &mut ai.transact_mut(),
            t.clone(),
            &place,
            yrs::OffsetKind::Bytes,
            Some(Arc::from("run1")),
        )
        .expect("writer");
        for piece in tokenize("new", 2) {
            w.push(&mut ai.transact_mut(), &piece);
        }
        // Nothing is deleted yet: the range is marked, the answer follows it.
        assert_eq!(t.get_string(&ai.transact()), "keep OLDnew keep");
        let delta = format!(
            "{:?}",
            t.diff(&ai.transact(), yrs::types::text::YChange::identity)
        );
        assert!(delta.contains("deletion"), "{delta}");
        both_ways(&ai, &person);
        if accepted {
            assert_eq!(
                unmark_text(&mut person.transact_mut(), &pt, &schema, "run1"),
                2
            );
            assert_eq!(pt.get_string(&person.transact()), "keep new keep");
        } else {
            revert(&mut person.transact_mut(), 7, &[]).expect("revert");
            keep_text(&mut person.transact_mut(), &pt, &schema, "run1");
            assert_eq!(pt.get_string(&person.transact()), "keep OLD keep");
        }
        let delta = format!(
            "{:?}",
            pt.diff(&person.transact(), yrs::types::text::YChange::identity)
        );
        assert!(!delta.contains("aiSuggestion"), "{accepted}: {delta}");
        both_ways(&ai, &person);
        assert_eq!(
            t.get_string(&ai.transact()),
            pt.get_string(&person.transact())
        );
    }
    // Into an XmlFragment: the answer comes after the range's block.
    for accepted in [true, false] {
        let ai = doc(9);
        let f = ai.get_or_insert_xml_fragment("default");
        let (a, b) = {
            let mut txn = ai.transact_mut();
            let p = f.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let text = p.push_back(&mut txn, XmlTextPrelim::new("Hello old world"));
            (
                text.sticky_index(&txn, 6, Assoc::After).expect("a"),
                text.sticky_index(&txn, 10, Assoc::Before).expect("b"),
            )
        };
        let mut w = DocWriter::xml(
            &mut ai.transact_mut(),
            f.clone(),
            &Place::Replace(a, b),
            Arc::new(Schema::default()),
            yrs::OffsetKind::Bytes,
            Some(Arc::from("run2")),
        )
        .expect("writer");
        for piece in tokenize("Fresh.", 2) {
            w.push(&mut ai.transact_mut(), &piece);
        }
        w.finish(&mut ai.transact_mut());
        let during = f.get_string(&ai.transact());
        // (The mark's attributes print in no fixed order.)
        assert!(
            during.starts_with("<paragraph>Hello <aiSuggestion ")
                && during.contains(r#"kind="deletion""#)
                && during.contains(">old </aiSuggestion>world</paragraph>")
                && during.ends_with(
                    r#"<paragraph aiSuggestion="run2"><aiSuggestion run="run2">Fresh.</aiSuggestion></paragraph>"#
                ),
            "{during}"
        );
        if accepted {
            accept(&mut ai.transact_mut(), &f, &schema, "run2");
            assert_eq!(
                f.get_string(&ai.transact()),
                "<paragraph>Hello world</paragraph><paragraph>Fresh.</paragraph>"
            );
        } else {
            // The run's own content is written by this same doc here, so only unmark.
            keep(&mut ai.transact_mut(), &f, &schema, "run2");
            let after = f.get_string(&ai.transact());
            assert!(
                after.starts_with("<paragraph>Hello old world</paragraph>"),
                "{after}"
            );
        }
    }
}
