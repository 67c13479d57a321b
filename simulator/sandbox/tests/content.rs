//! Pages, blocks, databases and data sources: reads, writes, pagination, filters, sorts.

// Helpers outside #[test] fns unwrap too: a panic is the test failing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};

fn ids(list: &Value) -> Vec<String> {
    list["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pagination_walks_every_row_once() {
    let s = start(unlimited()).await;
    let ds = s.sandbox.demo().data_source_id;
    let path = format!("/v1/data_sources/{ds}/query");
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let mut body = json!({"page_size": 37});
        if let Some(c) = &cursor {
            body["start_cursor"] = json!(c);
        }
        let page = s.post(&path, ALPHA, body).await.ok();
        assert_eq!(page["object"], "list");
        assert_eq!(page["type"], "page_or_data_source");
        let got = ids(&page);
        assert!(got.len() <= 37);
        seen.extend(got);
        pages += 1;
        assert!(pages < 20, "pagination must end");
        if page["has_more"] == json!(true) {
            cursor = Some(
                page["next_cursor"]
                    .as_str()
                    .expect("next_cursor")
                    .to_string(),
            );
        } else {
            assert_eq!(page["next_cursor"], Value::Null);
            break;
        }
    }
    assert_eq!(seen.len(), quire_sandbox::DEMO_TASK_ROWS);
    assert!(seen.len() >= 200);
    let unique: BTreeSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no row twice");
    // A cursor that is not one of ours is refused.
    s.post(
        &path,
        ALPHA,
        json!({"start_cursor": "00000000-0000-4000-8000-000000000000"}),
    )
    .await
    .expect_error(400, "validation_error");
    s.post(&path, ALPHA, json!({"start_cursor": "garbage"}))
        .await
        .expect_error(400, "validation_error");
    // Each row's parent is the data source, as of API version 2025-09-03.
    let first = s.get(&format!("/v1/pages/{}", seen[0]), ALPHA).await.ok();
    assert_eq!(first["parent"]["type"], "data_source_id");
    assert_eq!(first["parent"]["data_source_id"], ds);
    assert_eq!(first["parent"]["database_id"], s.sandbox.demo().database_id);
}

async fn query_all(s: &Server, ds: &str, body: Value) -> Vec<Value> {
    let mut out = Vec::new();
    let mut body = body;
    body["page_size"] = json!(100);
    loop {
        let page = s
            .post(&format!("/v1/data_sources/{ds}/query"), ALPHA, body.clone())
            .await
            .ok();
        out.extend(page["results"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => body["start_cursor"] = json!(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn filters_and_sorts() {
    let s = start(unlimited()).await;
    let ds = s.sandbox.demo().data_source_id;
    let all = query_all(&s, &ds, json!({})).await;
    let count =
        |pred: &dyn Fn(&Value) -> bool| all.iter().filter(|r| pred(&r["properties"])).count();

    let done = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Done", "checkbox": {"equals": true}}}),
    )
    .await;
    assert_eq!(done.len(), count(&|p| p["Done"]["checkbox"] == json!(true)));
    assert!(!done.is_empty() && done.len() < all.len());

    let high = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Priority", "select": {"equals": "High"}}}),
    )
    .await;
    assert_eq!(
        high.len(),
        count(&|p| p["Priority"]["select"]["name"] == "High")
    );
    assert!(!high.is_empty());

    let big = query_all(
        &s,
        &ds,
        json!({"filter": {"and": [
            {"property": "Points", "number": {"greater_than": 3}},
            {"or": [
                {"property": "Tags", "multi_select": {"contains": "bug"}},
                {"property": "Status", "status": {"equals": "Done"}}
            ]}
        ]}}),
    )
    .await;
    let expected = count(&|p| {
        p["Points"]["number"].as_f64().is_some_and(|n| n > 3.0)
            && (p["Tags"]["multi_select"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["name"] == "bug")
                || p["Status"]["status"]["name"] == "Done")
    });
    assert_eq!(big.len(), expected);
    assert!(expected > 0);

    let starts = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Name", "title": {"starts_with": "task 00"}}}),
    )
    .await;
    assert_eq!(starts.len(), 9, "Task 001..009");
    let empty_notes = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Notes", "rich_text": {"is_empty": true}}}),
    )
    .await;
    assert_eq!(
        empty_notes.len(),
        count(&|p| p["Notes"]["rich_text"].as_array().unwrap().is_empty())
    );
    let due = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Due", "date": {"on_or_after": "2025-10-01"}}}),
    )
    .await;
    assert_eq!(
        due.len(),
        count(&|p| p["Due"]["date"]["start"]
            .as_str()
            .is_some_and(|d| d >= "2025-10-01"))
    );
    let someone = s.sandbox.demo().user_ids[0].clone();
    let mine = query_all(
        &s,
        &ds,
        json!({"filter": {"property": "Assignee", "people": {"contains": someone}}}),
    )
    .await;
    assert_eq!(
        mine.len(),
        count(&|p| p["Assignee"]["people"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == json!(someone)))
    );

    let sorted = query_all(
        &s,
        &ds,
        json!({"sorts": [{"property": "Points", "direction": "descending"}]}),
    )
    .await;
    let points: Vec<Option<f64>> = sorted
        .iter()
        .map(|r| r["properties"]["Points"]["number"].as_f64())
        .collect();
    let firsts: Vec<f64> = points.iter().map_while(|p| *p).collect();
    assert!(firsts.windows(2).all(|w| w[0] >= w[1]), "descending");
    assert!(
        points[firsts.len()..].iter().all(Option::is_none),
        "empty values last"
    );
    let by_time = query_all(
        &s,
        &ds,
        json!({"sorts": [{"timestamp": "created_time", "direction": "ascending"}]}),
    )
    .await;
    let times: Vec<&str> = by_time
        .iter()
        .map(|r| r["created_time"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));

    // Bad filters are refused with a clear message.
    let msg = s
        .post(
            &format!("/v1/data_sources/{ds}/query"),
            ALPHA,
            json!({"filter": {"property": "Nope", "checkbox": {"equals": true}}}),
        )
        .await
        .expect_error(400, "validation_error");
    assert!(msg.contains("Nope"), "{msg}");
    s.post(
        &format!("/v1/data_sources/{ds}/query"),
        ALPHA,
        json!({"filter": {"property": "Done", "number": {"equals": 1}}}),
    )
    .await
    .expect_error(400, "validation_error");
    s.post(
        &format!("/v1/data_sources/{ds}/query"),
        ALPHA,
        json!({"sorts": [{"property": "Points", "direction": "up"}]}),
    )
    .await
    .expect_error(400, "validation_error");
}

#[tokio::test]
async fn create_update_append_move_trash() {
    let s = start(unlimited()).await;
    let demo = s.sandbox.demo();
    let me = s.get("/v1/users/me", ALPHA).await.ok();
    assert_eq!(me["type"], "bot");

    // A page under a page, with content.
    let page = s
        .post("/v1/pages", ALPHA, json!({
            "parent": {"page_id": demo.root_page_id},
            "properties": {"title": {"title": text("Launch plan")}},
            "children": [
                {"heading_2": {"rich_text": text("Goals")}},
                {"to_do": {"rich_text": text("Write the plan"), "checked": true}},
                {"toggle": {"rich_text": text("More"), "children": [{"paragraph": {"rich_text": text("Hidden")}}]}}
            ]
        }))
        .await
        .ok();
    let pid = page["id"].as_str().unwrap().to_string();
    assert_eq!(title_of(&page), "Launch plan");
    assert_eq!(page["parent"]["page_id"], demo.root_page_id);
    assert_eq!(page["created_by"]["id"], me["id"]);
    let kids = s
        .get(&format!("/v1/blocks/{pid}/children"), ALPHA)
        .await
        .ok();
    let kinds: Vec<&str> = kids["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["heading_2", "to_do", "toggle"]);
    assert_eq!(kids["results"][1]["to_do"]["checked"], true);
    assert_eq!(kids["results"][2]["has_children"], true);
    let heading = kids["results"][0]["id"].as_str().unwrap().to_string();

    // Append after the heading, then update and delete a block.
    let appended = s
        .patch(
            &format!("/v1/blocks/{pid}/children"),
            ALPHA,
            json!({"after": heading, "children": [{"paragraph": {"rich_text": text("Inserted")}}]}),
        )
        .await
        .ok();
    let new_block = appended["results"][0]["id"].as_str().unwrap().to_string();
    let kids = s
        .get(&format!("/v1/blocks/{pid}/children"), ALPHA)
        .await
        .ok();
    assert_eq!(ids(&kids)[1], new_block);
    let updated = s
        .patch(
            &format!("/v1/blocks/{new_block}"),
            ALPHA,
            json!({"paragraph": {"rich_text": text("Edited")}}),
        )
        .await
        .ok();
    assert_eq!(updated["paragraph"]["rich_text"][0]["plain_text"], "Edited");
    s.patch(
        &format!("/v1/blocks/{new_block}"),
        ALPHA,
        json!({"to_do": {"rich_text": text("x")}}),
    )
    .await
    .expect_error(400, "validation_error");
    let deleted = s
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/blocks/{new_block}"),
            ALPHA,
            None,
        )
        .await
        .ok();
    assert_eq!(deleted["in_trash"], true);
    s.patch(
        &format!("/v1/blocks/{new_block}"),
        ALPHA,
        json!({"paragraph": {"rich_text": text("again")}}),
    )
    .await
    .expect_error(400, "validation_error");
    let kids = s
        .get(&format!("/v1/blocks/{pid}/children"), ALPHA)
        .await
        .ok();
    assert!(!ids(&kids).contains(&new_block));

    // Rename, then move under beta's page: beta can now see it.
    let renamed = s
        .patch(
            &format!("/v1/pages/{pid}"),
            ALPHA,
            json!({"properties": {"title": {"title": text("Launch plan v2")}}}),
        )
        .await
        .ok();
    assert_eq!(title_of(&renamed), "Launch plan v2");
    s.get(&format!("/v1/pages/{pid}"), BETA)
        .await
        .expect_error(404, "object_not_found");
    let moved = s
        .post(
            &format!("/v1/pages/{pid}/move"),
            ALPHA,
            json!({"parent": {"type": "page_id", "page_id": demo.beta_page_id}}),
        )
        .await
        .ok();
    assert_eq!(moved["parent"]["page_id"], demo.beta_page_id);
    s.get(&format!("/v1/pages/{pid}"), BETA).await.ok();
    s.post(
        &format!("/v1/pages/{}/move", demo.root_page_id),
        ALPHA,
        json!({"parent": {"page_id": pid}}),
    )
    .await
    .expect_error(400, "validation_error");

    // Trash and restore.
    let trashed = s
        .patch(
            &format!("/v1/pages/{pid}"),
            ALPHA,
            json!({"in_trash": true}),
        )
        .await
        .ok();
    assert_eq!(trashed["in_trash"], true);
    s.patch(
        &format!("/v1/pages/{pid}"),
        ALPHA,
        json!({"properties": {"title": {"title": text("nope")}}}),
    )
    .await
    .expect_error(400, "validation_error");
    let found = s
        .post("/v1/search", ALPHA, json!({"query": "Launch plan v2"}))
        .await
        .ok();
    assert!(ids(&found).is_empty(), "trashed pages are not searchable");
    s.patch(
        &format!("/v1/pages/{pid}"),
        ALPHA,
        json!({"archived": false}),
    )
    .await
    .ok();
    let found = s
        .post(
            "/v1/search",
            ALPHA,
            json!({"query": "launch plan v2", "filter": {"property": "object", "value": "page"}}),
        )
        .await
        .ok();
    assert_eq!(ids(&found), std::slice::from_ref(&pid));
}

#[tokio::test]
async fn rows_databases_and_data_sources() {
    let s = start(unlimited()).await;
    let demo = s.sandbox.demo();
    let ds = &demo.data_source_id;
    let someone = demo.user_ids[1].clone();
    let row = s
        .post(
            "/v1/pages",
            ALPHA,
            json!({
                "parent": {"data_source_id": ds},
                "properties": {
                    "Name": {"title": text("Sandbox row")},
                    "Points": {"number": 21},
                    "Priority": {"select": {"name": "High"}},
                    "Tags": {"multi_select": [{"name": "docs"}, {"name": "brand-new"}]},
                    "Status": {"status": {"name": "In progress"}},
                    "Due": {"date": {"start": "2025-12-24"}},
                    "Assignee": {"people": [{"id": someone}]},
                    "Link": {"url": "https://example.com"}
                }
            }),
        )
        .await
        .ok();
    let rid = row["id"].as_str().unwrap().to_string();
    let p = &row["properties"];
    assert_eq!(p["Points"]["number"], 21);
    assert_eq!(p["Priority"]["select"]["name"], "High");
    assert_eq!(p["Tags"]["multi_select"][1]["name"], "brand-new");
    assert_eq!(p["Status"]["status"]["name"], "In progress");
    assert_eq!(p["Done"]["checkbox"], false);
    assert_eq!(p["Assignee"]["people"][0]["id"], json!(someone));
    // The new option joined the schema.
    let schema = s.get(&format!("/v1/data_sources/{ds}"), ALPHA).await.ok();
    assert_eq!(schema["object"], "data_source");
    assert_eq!(schema["parent"]["database_id"], demo.database_id);
    let tags: Vec<&str> = schema["properties"]["Tags"]["multi_select"]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert!(tags.contains(&"brand-new"));
    // Wrong types and unknown statuses are refused, and change nothing.
    s.patch(
        &format!("/v1/pages/{rid}"),
        ALPHA,
        json!({"properties": {"Points": {"number": "many"}, "Done": {"checkbox": true}}}),
    )
    .await
    .expect_error(400, "validation_error");
    s.patch(
        &format!("/v1/pages/{rid}"),
        ALPHA,
        json!({"properties": {"Status": {"status": {"name": "Someday"}}}}),
    )
    .await
    .expect_error(400, "validation_error");
    let again = s.get(&format!("/v1/pages/{rid}"), ALPHA).await.ok();
    assert_eq!(again["properties"]["Done"]["checkbox"], false);
    let prop = s
        .get(&format!("/v1/pages/{rid}/properties/pOnt"), ALPHA)
        .await
        .ok();
    assert_eq!(prop["object"], "property_item");
    assert_eq!(prop["number"], 21);
    let title = s
        .get(&format!("/v1/pages/{rid}/properties/title"), ALPHA)
        .await
        .ok();
    assert_eq!(title["object"], "list");
    assert_eq!(title["results"][0]["title"]["plain_text"], "Sandbox row");
    let hits = query_all(
        &s,
        ds,
        json!({"filter": {"property": "Points", "number": {"equals": 21}}}),
    )
    .await;
    assert_eq!(hits.len(), 1);

    // A database created under a page, then a second data source for it.
    let db = s
        .post("/v1/databases", ALPHA, json!({
            "parent": {"type": "page_id", "page_id": demo.root_page_id},
            "title": text("Bugs"),
            "initial_data_source": {"properties": {"Title": {"title": {}}, "Severity": {"select": {"options": [{"name": "S1"}, {"name": "S2"}]}}}}
        }))
        .await
        .ok();
    assert_eq!(db["object"], "database");
    let sources = db["data_sources"].as_array().unwrap();
    assert_eq!(sources.len(), 1);
    let new_ds = sources[0]["id"].as_str().unwrap().to_string();
    let db_id = db["id"].as_str().unwrap().to_string();
    // With one data source, a database_id parent still works.
    let bug = s.post("/v1/pages", ALPHA, json!({"parent": {"database_id": db_id}, "properties": {"Title": {"title": text("Crash")}, "Severity": {"select": {"name": "S1"}}}})).await.ok();
    assert_eq!(bug["parent"]["data_source_id"], new_ds);
    let second = s.post("/v1/data_sources", ALPHA, json!({"parent": {"type": "database_id", "database_id": db_id}, "title": text("Archive"), "properties": {"Name": {"title": {}}}})).await.ok();
    assert_eq!(second["object"], "data_source");
    let db = s.get(&format!("/v1/databases/{db_id}"), ALPHA).await.ok();
    assert_eq!(db["data_sources"].as_array().unwrap().len(), 2);
    s.post(
        "/v1/pages",
        ALPHA,
        json!({"parent": {"database_id": db_id}, "properties": {}}),
    )
    .await
    .expect_error(400, "validation_error");
    // Schema changes: add, rename, remove.
    let changed = s
        .patch(
            &format!("/v1/data_sources/{new_ds}"),
            ALPHA,
            json!({"properties": {"Severity": {"name": "Sev"}, "Fixed": {"checkbox": {}}}}),
        )
        .await
        .ok();
    assert!(changed["properties"]["Sev"].is_object());
    assert!(changed["properties"]["Fixed"].is_object());
    let bug = s
        .get(&format!("/v1/pages/{}", bug["id"].as_str().unwrap()), ALPHA)
        .await
        .ok();
    assert_eq!(
        bug["properties"]["Sev"]["select"]["name"], "S1",
        "values survive a rename"
    );
    let changed = s
        .patch(
            &format!("/v1/data_sources/{new_ds}"),
            ALPHA,
            json!({"properties": {"Fixed": null}}),
        )
        .await
        .ok();
    assert!(changed["properties"].get("Fixed").is_none());
    // The new database appears as a child_database block of the root page.
    let kids = s
        .get(&format!("/v1/blocks/{}/children", demo.root_page_id), ALPHA)
        .await
        .ok();
    assert!(
        kids["results"]
            .as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "child_database" && b["id"] == json!(db_id))
    );
}

#[tokio::test]
async fn search_comments_users() {
    let s = start(unlimited()).await;
    let demo = s.sandbox.demo();
    // Search: data sources and pages, newest first, scoped to what is shared.
    let sources = s
        .post(
            "/v1/search",
            ALPHA,
            json!({"filter": {"property": "object", "value": "data_source"}}),
        )
        .await
        .ok();
    assert_eq!(ids(&sources), std::slice::from_ref(&demo.data_source_id));
    let beta_sources = s
        .post(
            "/v1/search",
            BETA,
            json!({"filter": {"property": "object", "value": "data_source"}}),
        )
        .await
        .ok();
    assert!(ids(&beta_sources).is_empty());
    let pages = s
        .post("/v1/search", BETA, json!({"page_size": 100}))
        .await
        .ok();
    let times: Vec<&str> = pages["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["last_edited_time"].as_str().unwrap())
        .collect();
    assert!(!times.is_empty());
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "newest first");
    s.post(
        "/v1/search",
        ALPHA,
        json!({"filter": {"property": "object", "value": "database"}}),
    )
    .await
    .expect_error(400, "validation_error");

    // Comments: start a discussion, reply in it, list them.
    let page = &demo.beta_page_id;
    let first = s
        .post(
            "/v1/comments",
            BETA,
            json!({"parent": {"page_id": page}, "rich_text": text("Looks good")}),
        )
        .await
        .ok();
    assert_eq!(first["object"], "comment");
    let discussion = first["discussion_id"].as_str().unwrap().to_string();
    let reply = s
        .post(
            "/v1/comments",
            BETA,
            json!({"discussion_id": discussion, "rich_text": text("Thanks")}),
        )
        .await
        .ok();
    assert_eq!(reply["discussion_id"], json!(discussion));
    let listed = s
        .get(&format!("/v1/comments?block_id={page}"), BETA)
        .await
        .ok();
    let texts: Vec<&str> = listed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["rich_text"][0]["plain_text"].as_str().unwrap())
        .collect();
    assert!(texts.ends_with(&["Looks good", "Thanks"]), "{texts:?}");
    s.get(
        &format!("/v1/comments?block_id={}", demo.alpha_only_page_id),
        BETA,
    )
    .await
    .expect_error(404, "object_not_found");
    s.get("/v1/comments", BETA)
        .await
        .expect_error(400, "validation_error");
    s.post("/v1/comments", BETA, json!({"parent": {"page_id": page}}))
        .await
        .expect_error(400, "validation_error");

    // Users: five people plus one bot per integration, paginated.
    let users = s.get("/v1/users?page_size=4", ALPHA).await.ok();
    assert_eq!(users["results"].as_array().unwrap().len(), 4);
    assert_eq!(users["has_more"], true);
    let cursor = users["next_cursor"].as_str().unwrap();
    let rest = s
        .get(
            &format!("/v1/users?page_size=4&start_cursor={cursor}"),
            ALPHA,
        )
        .await
        .ok();
    assert_eq!(rest["results"].as_array().unwrap().len(), 3);
    let person = s
        .get(&format!("/v1/users/{}", demo.user_ids[0]), ALPHA)
        .await
        .ok();
    assert_eq!(person["type"], "person");
    assert!(person["person"]["email"].as_str().unwrap().contains('@'));
    let me_beta = s.get("/v1/users/me", BETA).await.ok();
    assert_eq!(
        me_beta["id"],
        json!(s.sandbox.integrations()[1].bot_user_id)
    );
}
