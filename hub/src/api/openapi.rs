//! The OpenAPI 3.1 document of `/v1`, served at `/v1/openapi.json`. Written by hand next to
//! the routes; a test (hub/tests/api.rs) checks that every described operation is routed.

use axum::Json;
use serde_json::{Value, json};

pub(super) async fn serve() -> Json<Value> {
    Json(document())
}

/// One documented operation: method, path, summary, security scheme, request body schema,
/// success status, success schema.
type Operation = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    Option<&'static str>,
    u16,
    &'static str,
);

/// Every documented operation.
const OPERATIONS: &[Operation] = &[
    (
        "get",
        "/v1/tenants",
        "List tenants",
        "operator",
        None,
        200,
        "TenantList",
    ),
    (
        "post",
        "/v1/tenants",
        "Create a tenant (returns its first HS256 signing key once)",
        "operator",
        Some("NewTenant"),
        201,
        "Tenant",
    ),
    (
        "get",
        "/v1/tenants/{tenant}",
        "Read a tenant",
        "operator",
        None,
        200,
        "Tenant",
    ),
    (
        "patch",
        "/v1/tenants/{tenant}",
        "Change a tenant's name or settings",
        "operator",
        Some("TenantPatch"),
        200,
        "Tenant",
    ),
    (
        "delete",
        "/v1/tenants/{tenant}",
        "Delete a tenant and all its data (live rooms close with 4404)",
        "operator",
        None,
        204,
        "",
    ),
    (
        "get",
        "/v1/tenants/{tenant}/api-keys",
        "List a tenant's API keys",
        "operator",
        None,
        200,
        "ApiKeyList",
    ),
    (
        "post",
        "/v1/tenants/{tenant}/api-keys",
        "Create an API key (the key is shown once)",
        "operator",
        Some("NewApiKey"),
        201,
        "ApiKey",
    ),
    (
        "delete",
        "/v1/tenants/{tenant}/api-keys/{key_id}",
        "Revoke an API key",
        "operator",
        None,
        204,
        "",
    ),
    (
        "get",
        "/v1/keys",
        "List token verification keys",
        "tenant",
        None,
        200,
        "KeyList",
    ),
    (
        "post",
        "/v1/keys",
        "Add a token verification key (HS256 secrets are generated when absent and shown once)",
        "tenant",
        Some("NewKey"),
        201,
        "Key",
    ),
    (
        "delete",
        "/v1/keys/{kid}",
        "Revoke a token verification key",
        "tenant",
        None,
        204,
        "",
    ),
    (
        "post",
        "/v1/tokens",
        "Mint a client token for rooms and a role",
        "tenant",
        Some("TokenRequest"),
        201,
        "Token",
    ),
    (
        "get",
        "/v1/webhook",
        "Read the webhook and its last delivery status",
        "tenant",
        None,
        200,
        "Webhook",
    ),
    (
        "put",
        "/v1/webhook",
        "Set the webhook (the secret is generated when absent and shown once)",
        "tenant",
        Some("PutWebhook"),
        200,
        "Webhook",
    ),
    (
        "delete",
        "/v1/webhook",
        "Remove the webhook",
        "tenant",
        None,
        204,
        "",
    ),
    (
        "get",
        "/v1/webhook/events",
        "Recent webhook events and their delivery state",
        "tenant",
        None,
        200,
        "EventList",
    ),
    (
        "get",
        "/v1/rooms",
        "List rooms (paged by name: ?after=&limit=)",
        "tenant",
        None,
        200,
        "RoomList",
    ),
    (
        "post",
        "/v1/rooms",
        "Create a room",
        "tenant",
        Some("NewRoom"),
        201,
        "Room",
    ),
    (
        "get",
        "/v1/rooms/{room}",
        "Read a room",
        "member",
        None,
        200,
        "Room",
    ),
    (
        "delete",
        "/v1/rooms/{room}",
        "Delete a room, its document and versions (members close with 4404)",
        "tenant",
        None,
        204,
        "",
    ),
    (
        "get",
        "/v1/rooms/{room}/document",
        "Read the document as JSON (?view=tree: XML as nodes, the view path operations use), or as a binary Yjs update (?format=update or Accept: application/octet-stream)",
        "member",
        None,
        200,
        "Document",
    ),
    (
        "post",
        "/v1/rooms/{room}/document",
        "Apply a binary Yjs v1 update (application/octet-stream) or JSON operations; every member receives it; answers once durable",
        "member",
        Some("Ops"),
        200,
        "EditResult",
    ),
    (
        "get",
        "/v1/rooms/{room}/versions",
        "List named versions",
        "member",
        None,
        200,
        "VersionList",
    ),
    (
        "post",
        "/v1/rooms/{room}/versions",
        "Create a named version of the current document",
        "member",
        Some("NewVersion"),
        201,
        "Version",
    ),
    (
        "get",
        "/v1/rooms/{room}/versions/{id}",
        "Read a version (JSON content, or ?format=update)",
        "member",
        None,
        200,
        "Version",
    ),
    (
        "post",
        "/v1/rooms/{room}/versions/{id}/restore",
        "Restore a version: an ordinary edit every member receives",
        "member",
        None,
        200,
        "EditResult",
    ),
    (
        "get",
        "/v1/rooms/{room}/presence",
        "Who is connected to the room on this node",
        "member",
        None,
        200,
        "Presence",
    ),
    (
        "post",
        "/v1/rooms/{room}/ai/runs",
        "Ask the assistant (an Idempotency-Key header gives back the same run); a client JWT is accepted",
        "member",
        Some("AiAsk"),
        201,
        "AiRun",
    ),
    (
        "get",
        "/v1/rooms/{room}/ai/runs",
        "The room's AI runs, newest first (?user, ?status, ?before, ?limit)",
        "member",
        None,
        200,
        "AiRunList",
    ),
    (
        "get",
        "/v1/rooms/{room}/ai/runs/{id}",
        "An AI run; with Accept: text/event-stream, its events (ai.run, ai.error, ai.done) until it ends",
        "member",
        None,
        200,
        "AiRun",
    ),
    (
        "post",
        "/v1/rooms/{room}/ai/runs/{id}/cancel",
        "Stop a run (write access); its partial text stays, marked cancelled",
        "member",
        None,
        200,
        "AiRun",
    ),
    (
        "post",
        "/v1/rooms/{room}/ai/runs/{id}/revert",
        "Remove exactly the run's content, at any later time (write access)",
        "member",
        None,
        200,
        "AiRun",
    ),
    (
        "post",
        "/v1/rooms/{room}/ai/runs/{id}/accept",
        "Accept a suggestion: its mark goes, its content stays (write access)",
        "member",
        None,
        200,
        "AiRun",
    ),
    (
        "post",
        "/v1/rooms/{room}/ai/runs/{id}/reject",
        "Reject a suggestion: its content goes (write access)",
        "member",
        None,
        200,
        "AiRun",
    ),
    (
        "get",
        "/v1/ai/runs",
        "The tenant's AI runs, newest first (?room, ?user, ?status, ?before, ?limit; a client JWT sees its rooms)",
        "member",
        None,
        200,
        "AiRunList",
    ),
];

fn obj(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn schemas() -> Value {
    let settings = obj(
        json!({
            "max_connections": { "type": "integer", "minimum": 1 },
            "max_rooms": { "type": "integer", "minimum": 1 },
            "max_document_bytes": { "type": "integer", "minimum": 1024 },
            "messages_per_second": { "type": "integer", "minimum": 1 },
            "ai_tokens_per_day": { "type": "integer", "minimum": 0 },
            "ai": obj(json!({
                "enabled": { "type": "boolean" },
                "provider": { "type": "string" },
                "models": { "type": "array", "items": { "type": "string" } },
                "model": { "type": "string" },
                "system_prompt": { "type": "string", "maxLength": 16384 },
                "max_concurrent_runs": { "type": "integer", "minimum": 1 },
                "max_output_tokens": { "type": "integer", "minimum": 1 },
                "max_prompt_bytes": { "type": "integer", "minimum": 1 },
                "runs_per_minute": { "type": "integer", "minimum": 1 },
                "readers_may_ask": { "type": "boolean" }
            }), &[])
        }),
        &[],
    );
    let room = obj(
        json!({
            "name": { "type": "string" }, "meta": { "type": "object" },
            "created": { "type": "integer" }, "stored_bytes": { "type": "integer" },
            "last_activity": { "type": ["integer", "null"] }, "members": { "type": "integer" }
        }),
        &["name", "meta", "created", "stored_bytes", "members"],
    );
    let op = json!({
        "oneOf": [
            obj(json!({"op": {"const": "insert_text"}, "name": {"type": "string"}, "index": {"type": "integer", "description": "UTF-16 code units"}, "text": {"type": "string"}}), &["op", "name", "index", "text"]),
            obj(json!({"op": {"const": "delete_text"}, "name": {"type": "string"}, "index": {"type": "integer"}, "length": {"type": "integer"}}), &["op", "name", "index", "length"]),
            obj(json!({"op": {"const": "set_map"}, "name": {"type": "string"}, "key": {"type": "string"}, "value": {}}), &["op", "name", "key", "value"]),
            obj(json!({"op": {"const": "delete_map"}, "name": {"type": "string"}, "key": {"type": "string"}}), &["op", "name", "key"]),
            obj(json!({"op": {"const": "push_array"}, "name": {"type": "string"}, "values": {"type": "array"}}), &["op", "name", "values"]),
            obj(json!({"op": {"const": "delete_array"}, "name": {"type": "string"}, "index": {"type": "integer"}, "length": {"type": "integer"}}), &["op", "name", "index", "length"]),
            obj(json!({"op": {"const": "set"}, "path": {"$ref": "#/components/schemas/Path"}, "value": {}}), &["op", "path", "value"]),
            obj(json!({"op": {"const": "delete"}, "path": {"$ref": "#/components/schemas/Path"}}), &["op", "path"]),
            obj(json!({"op": {"const": "splice"}, "path": {"$ref": "#/components/schemas/Path"}, "index": {"type": "integer"}, "delete": {"type": "integer"}, "insert": {"type": "array", "description": "plain values into an array; nodes ({type, attrs, content} or {type: \"text\", text}) into XML"}, "xml": {"type": "boolean"}}), &["op", "path", "index"]),
            obj(json!({"op": {"const": "splice_text"}, "path": {"$ref": "#/components/schemas/Path"}, "index": {"type": "integer", "description": "UTF-16 code units"}, "delete": {"type": "integer"}, "insert": {"type": "string"}}), &["op", "path", "index"])
        ]
    });
    json!({
        "Path": {"type": "array", "description": "a root name, then map keys (strings) and list indexes (integers); into XML, \"content\" then an index, \"attrs\" then a name, \"text\" for a text node's characters", "items": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]}},
        "Problem": obj(json!({
            "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
            "detail": {"type": "string"}, "code": {"type": "string"}
        }), &["type", "title", "status", "detail", "code"]),
        "Settings": settings,
        "NewTenant": obj(json!({"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"}, "name": {"type": "string"}, "settings": {"$ref": "#/components/schemas/Settings"}}), &["id"]),
        "TenantPatch": obj(json!({"name": {"type": "string"}, "settings": {"$ref": "#/components/schemas/Settings"}}), &[]),
        "Tenant": obj(json!({"id": {"type": "string"}, "name": {"type": "string"}, "settings": {"$ref": "#/components/schemas/Settings"}, "created": {"type": "integer"}}), &["id", "name", "settings", "created"]),
        "TenantList": obj(json!({"tenants": {"type": "array", "items": {"$ref": "#/components/schemas/Tenant"}}}), &["tenants"]),
        "NewApiKey": obj(json!({"name": {"type": "string"}}), &[]),
        "ApiKey": obj(json!({"key_id": {"type": "string"}, "name": {"type": "string"}, "created": {"type": "integer"}, "revoked": {"type": ["integer", "null"]}, "key": {"type": "string", "description": "only in the creation response"}}), &["key_id", "name", "created"]),
        "ApiKeyList": obj(json!({"api_keys": {"type": "array", "items": {"$ref": "#/components/schemas/ApiKey"}}}), &["api_keys"]),
        "NewKey": obj(json!({"alg": {"enum": ["HS256", "EdDSA", "RS256"]}, "kid": {"type": "string"}, "key": {"type": "string"}}), &["alg"]),
        "Key": obj(json!({"kid": {"type": "string"}, "alg": {"type": "string"}, "created": {"type": "integer"}, "revoked": {"type": ["integer", "null"]}, "secret": {"type": "string"}}), &["kid", "alg", "created"]),
        "KeyList": obj(json!({"keys": {"type": "array", "items": {"$ref": "#/components/schemas/Key"}}}), &["keys"]),
        "TokenRequest": obj(json!({"room": {"type": "string"}, "rooms": {"type": "array", "items": {"type": "string"}}, "role": {"enum": ["read", "write"]}, "sub": {"type": "string"}, "name": {"type": "string"}, "color": {"type": "string"}, "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 86400}}), &[]),
        "Token": obj(json!({"token": {"type": "string"}, "expires_at": {"type": "integer"}, "kid": {"type": "string"}, "role": {"type": "string"}}), &["token", "expires_at", "kid", "role"]),
        "PutWebhook": obj(json!({"url": {"type": "string", "format": "uri"}, "secret": {"type": "string"}, "events": {"type": "array", "items": {"enum": crate::webhooks::events::ALL}}}), &["url"]),
        "Webhook": obj(json!({"url": {"type": "string"}, "events": {"type": "array", "items": {"type": "string"}}, "last_status": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]}, "last_attempt": {"type": ["integer", "null"]}, "secret": {"type": "string"}}), &["url", "events"]),
        "EventList": obj(json!({"events": {"type": "array", "items": {"type": "object"}}}), &["events"]),
        "NewRoom": obj(json!({"name": {"type": "string"}, "meta": {"type": "object"}}), &["name"]),
        "Room": room,
        "RoomList": obj(json!({"rooms": {"type": "array", "items": {"$ref": "#/components/schemas/Room"}}, "next": {"type": ["string", "null"]}}), &["rooms"]),
        "Document": {"type": "object", "description": "Root types by name: Y.Text as a string, Y.Map as an object, Y.Array as a list, XML as a string"},
        "Ops": obj(json!({"ops": {"type": "array", "items": op}}), &["ops"]),
        "EditResult": obj(json!({"applied": {"type": "boolean"}, "durable": {"type": "boolean"}}), &["applied", "durable"]),
        "NewVersion": obj(json!({"name": {"type": "string"}}), &["name"]),
        "Version": obj(json!({"id": {"type": "integer"}, "name": {"type": "string"}, "created": {"type": "integer"}, "bytes": {"type": "integer"}, "content": {"$ref": "#/components/schemas/Document"}}), &["id", "name", "created", "bytes"]),
        "VersionList": obj(json!({"versions": {"type": "array", "items": {"$ref": "#/components/schemas/Version"}}}), &["versions"]),
        "Presence": obj(json!({"room": {"type": "string"}, "members": {"type": "array", "items": {"type": "object"}}}), &["room", "members"]),
        "Route": obj(json!({"room": {"type": "string"}, "node": {"type": "string"}, "url": {"type": "string"}, "local": {"type": "boolean"}, "nodes": {"type": "integer"}}), &["room", "node", "url", "local", "nodes"])
    })
}

/// The assistant's schemas (a separate macro call: one `json!` of every schema would exceed
/// the macro recursion limit).
fn ai_schemas() -> Value {
    json!({
        "AiAsk": obj(json!({
            "id": {"type": "string", "description": "the client's id for the request, echoed in events"},
            "prompt": {"type": "string"},
            "target": {"enum": ["chat", "document"], "default": "chat"},
            "field": {"type": "string", "default": "default", "description": "the document root"},
            "field_type": {"enum": ["xml", "text"], "default": "xml"},
            "position": {"type": "string", "description": "base64 of Y.encodeRelativePosition; absent: the end"},
            "range": {"type": "array", "items": {"type": "string"}, "minItems": 2, "maxItems": 2},
            "apply": {"enum": ["direct", "suggest"], "default": "direct"},
            "model": {"type": "string"},
            "reply_to": {"type": "string"},
            "revert_on_cancel": {"type": "boolean"}
        }), &["prompt"]),
        "AiRun": obj(json!({
            "id": {"type": "string"}, "room": {"type": "string"}, "user": {"type": ["string", "null"]},
            "provider": {"type": "string"}, "model": {"type": "string"},
            "target": {"enum": ["chat", "document"]}, "mode": {"enum": ["direct", "suggest"]},
            "status": {"enum": ["queued", "running", "done", "cancelled", "failed", "interrupted", "reverted", "accepted", "rejected"]},
            "client_id": {"type": "integer", "description": "the Yjs client id of the run's items"},
            "node": {"type": "string", "description": "the node that executes the run (in a cluster, the room's home)"},
            "prompt_tokens": {"type": "integer"}, "completion_tokens": {"type": "integer"},
            "ttft_ms": {"type": ["integer", "null"]}, "duration_ms": {"type": ["integer", "null"]},
            "error": {"type": ["string", "null"]}, "created": {"type": "integer"}, "finished": {"type": ["integer", "null"]}
        }), &["id", "room", "status", "model", "target", "mode", "client_id", "created"]),
        "AiRunList": obj(json!({"runs": {"type": "array", "items": {"$ref": "#/components/schemas/AiRun"}}, "next_before": {"type": ["integer", "null"]}}), &["runs"]),
        "SearchAnswer": obj(json!({
            "query": {"type": "string"},
            "mode": {"enum": ["text", "semantic", "hybrid"]},
            "semantic": {"type": "boolean", "description": "whether search by meaning took part"},
            "took_ms": {"type": "integer"},
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/SearchHit"}}
        }), &["query", "mode", "semantic", "took_ms", "results"]),
        "SearchHit": obj(json!({
            "room": {"type": "string"},
            "score": {"type": "number", "description": "higher is better, within one answer"},
            "snippet": {"type": "string", "description": "plain text"},
            "highlights": {"type": "array", "items": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}, "description": "[start, end) of matches in the snippet, in Unicode code points"},
            "position": obj(json!({
                "field": {"type": "string"},
                "offset": {"type": "integer", "description": "characters into the room's plain text"},
                "relative": {"type": "string", "description": "base64 of Y.encodeRelativePosition at the passage's start"}
            }), &["field", "offset"]),
            "matched": {"type": "array", "items": {"enum": ["text", "semantic"]}}
        }), &["room", "score", "snippet", "highlights", "position", "matched"])
    })
}

/// The whole document.
pub(super) fn document() -> Value {
    let mut paths = serde_json::Map::new();
    let problem = json!({
        "description": "Error",
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    });
    for (method, path, summary, security, body, status, schema) in OPERATIONS {
        let mut op = json!({
            "summary": summary,
            "security": [ { *security: [] } ],
            "responses": { "default": problem.clone() },
        });
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if let Some(body) = body {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{body}") } } }
            });
        }
        op["responses"][status.to_string()] = if schema.is_empty() {
            json!({ "description": "Done" })
        } else {
            json!({
                "description": "OK",
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
            })
        };
        let entry = paths
            .entry(path.to_string())
            .or_insert_with(|| Value::Object(Default::default()));
        entry[*method] = op;
    }
    paths.insert(
        "/v1/route".into(),
        json!({ "get": {
            "summary": "The room's home node in the ring (this node when it runs alone)",
            "security": [],
            "parameters": [ { "name": "room", "in": "query", "required": true, "schema": { "type": "string" } } ],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Route" } } } },
                "default": problem.clone()
            }
        } }),
    );
    paths.insert(
        "/v1/dev-token".into(),
        json!({ "get": {
            "summary": "A development token for one room (write role, one hour), on a node that allows anonymous access, for a request whose Host and Origin are loopback or allowed (the web client of a local hub)",
            "security": [],
            "parameters": [ { "name": "room", "in": "query", "required": true, "schema": { "type": "string" } } ],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "token": { "type": "string" }, "room": { "type": "string" }, "role": { "type": "string" }, "expires": { "type": "integer" } },
                    "required": ["token", "room", "role", "expires"] } } } },
                "default": problem.clone()
            }
        } }),
    );
    paths.insert(
        "/v1/search".into(),
        json!({ "get": {
            "summary": "Search the tenant's rooms that the caller may open (a client JWT: its rooms claim; an API key: every room), by words, by meaning, or both fused (docs/SEARCH.md)",
            "security": [ { "member": [] } ],
            "parameters": [
                { "name": "q", "in": "query", "required": true, "schema": { "type": "string", "minLength": 1, "maxLength": 256 } },
                { "name": "mode", "in": "query", "schema": { "enum": ["text", "semantic", "hybrid"], "default": "hybrid" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 50, "default": 10 } },
                { "name": "room_prefix", "in": "query", "schema": { "type": "string", "maxLength": 256 } }
            ],
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SearchAnswer" } } } },
                "default": problem.clone()
            }
        } }),
    );
    paths.insert(
        "/v1/openapi.json".into(),
        json!({ "get": { "summary": "This document", "security": [], "responses": { "200": { "description": "OpenAPI 3.1" } } } }),
    );
    let mut all_schemas = schemas();
    if let (Some(all), Value::Object(ai)) = (all_schemas.as_object_mut(), ai_schemas()) {
        all.extend(ai);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Chorus REST API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Tenants, rooms, documents, versions, presence, webhooks and the AI assistant. Errors are application/problem+json. Operator calls may act for a tenant with the Chorus-Tenant header."
        },
        "paths": paths,
        "components": {
            "schemas": all_schemas,
            "securitySchemes": {
                "operator": { "type": "http", "scheme": "bearer", "description": "--operator-key" },
                "tenant": { "type": "http", "scheme": "bearer", "description": "a tenant API key chk_<tenant>.<id>.<secret>, or the operator key with Chorus-Tenant" },
                "member": { "type": "http", "scheme": "bearer", "description": "a tenant API key, the operator key with Chorus-Tenant, or a client JWT (limited to its rooms and role; nothing on a node that allows anonymous access)" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        let schemas = &doc["components"]["schemas"];
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part.chars().take_while(|c| c.is_alphanumeric()).collect();
            assert!(schemas.get(&name).is_some(), "missing schema {name}");
        }
    }
}
