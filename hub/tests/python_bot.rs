//! The Python example bot (`examples/python-bot/`) against a real hub: it joins over the JSON
//! mode, answers commands typed in the chat, and ticks and adds checklist items that a Yjs
//! client sees in the editor's structure (Tiptap's `taskList` / `taskItem` in `default`).
//! Needs python3 with venv; the test installs the bot's requirements into a virtualenv under
//! the target directory. Without python3 it skips loudly, except under CI, where it fails.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chorus_protocol::client::Client;
use common::*;
use tokio::io::AsyncBufReadExt;
use yrs::{
    Any, Array, GetString, Map, MapPrelim, Out, ReadTxn, Transact, Xml, XmlElementPrelim,
    XmlFragment, XmlTextPrelim,
};

/// A virtualenv with the bot's requirements, made once per target directory.
async fn python() -> Option<PathBuf> {
    if !have("python3") {
        chorus_persistence::testing::skip("python3 is not installed");
        return None;
    }
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("python-bot-venv");
    let py = venv.join("bin/python");
    let ready = tokio::process::Command::new(&py)
        .args(["-c", "import websockets"])
        .output()
        .await
        .is_ok_and(|o| o.status.success());
    if !ready {
        let made = tokio::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .await
            .expect("python3 -m venv");
        assert!(
            made.success(),
            "python3 -m venv failed (Debian: apt-get install python3-venv)"
        );
        let requirements = bot_dir().join("requirements.txt");
        let installed = tokio::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "-r"])
            .arg(&requirements)
            .status()
            .await
            .expect("pip");
        assert!(
            installed.success(),
            "pip install -r {}",
            requirements.display()
        );
    }
    Some(py)
}

fn bot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/python-bot")
}

fn write_checklist(c: &Client, items: &[&str]) {
    let doc = c.doc();
    let f = doc.get_or_insert_xml_fragment("default");
    let mut txn = doc.transact_mut();
    let h = f.insert(&mut txn, 0, XmlElementPrelim::empty("heading"));
    h.insert(&mut txn, 0, XmlTextPrelim::new("Packing"));
    let list = f.insert(&mut txn, 1, XmlElementPrelim::empty("taskList"));
    for (i, item) in items.iter().enumerate() {
        let li = list.insert(&mut txn, i as u32, XmlElementPrelim::empty("taskItem"));
        li.insert_attribute(&mut txn, "checked", Any::Bool(false));
        let p = li.insert(&mut txn, 0, XmlElementPrelim::empty("paragraph"));
        p.insert(&mut txn, 0, XmlTextPrelim::new(*item));
    }
}

/// The task items as Tiptap reads them: (text, checked).
fn checklist(c: &Client) -> Vec<(String, bool)> {
    let doc = c.doc();
    let txn = doc.transact();
    let Some(f) = txn.get_xml_fragment("default") else {
        return Vec::new();
    };
    let Some(list) = f.get(&txn, 1).and_then(|n| n.into_xml_element()) else {
        return Vec::new();
    };
    list.children(&txn)
        .filter_map(|n| n.into_xml_element())
        .filter(|li| &**li.tag() == "taskItem")
        .map(|li| {
            let checked = matches!(
                li.get_attribute(&txn, "checked"),
                Some(Out::Any(Any::Bool(true)))
            );
            let text = li
                .get(&txn, 0)
                .and_then(|p| p.into_xml_element())
                .and_then(|p| p.get(&txn, 0))
                .and_then(|t| t.into_xml_text())
                .map(|t| t.get_string(&txn))
                .unwrap_or_default();
            (text, checked)
        })
        .collect()
}

fn chat_texts(c: &Client) -> Vec<String> {
    let doc = c.doc();
    let txn = doc.transact();
    let Some(chat) = txn.get_array("chat") else {
        return Vec::new();
    };
    chat.iter(&txn)
        .filter_map(|m| match m {
            Out::YMap(m) => match m.get(&txn, "text") {
                Some(Out::YText(t)) => Some(t.get_string(&txn)),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

fn say(c: &Client, n: usize, text: &str) {
    let doc = c.doc();
    let chat = doc.get_or_insert_array("chat");
    let mut txn = doc.transact_mut();
    let m = chat.push_back(&mut txn, MapPrelim::default());
    m.insert(&mut txn, "id", format!("alice-{n}"));
    m.insert(&mut txn, "author", "alice");
    m.insert(&mut txn, "role", "user");
    m.insert(&mut txn, "status", "done");
    m.insert(&mut txn, "text", yrs::TextPrelim::new(text));
}

async fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let done = tokio::time::timeout(PATIENCE, async {
        while !ok() {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await;
    assert!(done.is_ok(), "never happened: {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_bot_answers_the_chat_and_ticks_the_editors_checklist() {
    let Some(py) = python().await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(test_config(dir.path())).await;
    let alice = server.client("packing").await;
    write_checklist(&alice, &["tickets", "passport"]);

    let mut bot = tokio::process::Command::new(&py)
        .arg(bot_dir().join("checklist_bot.py"))
        .args([
            "--hub",
            &format!("ws://{}", server.addr),
            "--room",
            "packing",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("the bot starts");
    let mut out = tokio::io::BufReader::new(bot.stdout.take().expect("stdout")).lines();
    let joined = tokio::time::timeout(PATIENCE, out.next_line())
        .await
        .expect("the bot says it joined")
        .expect("read");
    assert_eq!(joined.as_deref(), Some("joined packing"));
    // Its presence shows once it has the document: commands from then on reach it.
    eventually("the bot's presence", || {
        alice
            .state()
            .awareness
            .values()
            .any(|(_, s)| s.contains("listening for /commands"))
    })
    .await;

    say(&alice, 1, "/tick pass");
    eventually("passport ticked in the editor's structure", || {
        checklist(&alice) == [("tickets".into(), false), ("passport".into(), true)]
    })
    .await;
    eventually("the bot's reply", || {
        chat_texts(&alice).contains(&"Done: /tick pass".to_string())
    })
    .await;

    say(&alice, 2, "/add maps");
    eventually("a third item", || {
        checklist(&alice).last() == Some(&("maps".to_string(), false))
    })
    .await;

    say(&alice, 3, "/list");
    eventually("the list in the chat", || {
        chat_texts(&alice)
            .iter()
            .any(|t| t == "[ ] tickets\n[x] passport\n[ ] maps")
    })
    .await;

    say(&alice, 4, "/tick nothing-like-it");
    eventually("a helpful refusal", || {
        chat_texts(&alice)
            .iter()
            .any(|t| t.contains("No item matches 'nothing-like-it'"))
    })
    .await;

    // The hub stored what the bot did (the tree view is what the room holds).
    let (status, body) = server.get("/v1/rooms/packing/document?view=tree").await;
    assert_eq!(status, 200, "{body}");
    let tree: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(tree["default"][1]["content"][1]["attrs"]["checked"], true);

    bot.start_kill().expect("stop the bot");
    let _ = bot.wait().await;
}
