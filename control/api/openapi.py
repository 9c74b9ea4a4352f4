"""The OpenAPI 3 document of the control API. A test runs schemathesis against the live app."""

from __future__ import annotations

from typing import Any

from control.api.validation import ID_PATTERN, MAX_CLIENTS, MAX_NAME

_ID = {"type": "string", "pattern": ID_PATTERN, "minLength": 1, "maxLength": 64}
_TIME = {"type": "string", "format": "date-time"}
_NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": r"\S"}

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {"error": {"type": "object", "required": ["code", "message"],
                                 "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}},
    },
    "ProviderIn": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": _NAME, "teletherapy_enabled": {"type": "boolean", "default": False},
                       "waiting_room_enabled": {"type": "boolean", "default": False}},
    },
    "Provider": {
        "type": "object", "required": ["id", "name", "teletherapy_enabled", "waiting_room_enabled"],
        "properties": {"id": _ID, "name": {"type": "string"}, "teletherapy_enabled": {"type": "boolean"},
                       "waiting_room_enabled": {"type": "boolean"}},
    },
    "ClientIn": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": _NAME, "portal_account_active": {"type": "boolean", "default": False}},
    },
    "Client": {
        "type": "object", "required": ["id", "name", "portal_account_active"],
        "properties": {"id": _ID, "name": {"type": "string"}, "portal_account_active": {"type": "boolean"}},
    },
    "AppointmentIn": {
        "type": "object", "additionalProperties": False,
        "required": ["provider_id", "client_ids", "telehealth", "starts_at", "ends_at"],
        "properties": {
            "provider_id": _ID,
            "client_ids": {"type": "array", "items": _ID, "minItems": 1, "maxItems": MAX_CLIENTS,
                           "uniqueItems": True},
            "telehealth": {"type": "boolean"},
            "starts_at": _TIME, "ends_at": _TIME,
            "status": {"type": "string", "enum": ["scheduled", "cancelled", "completed", "no_show"],
                       "default": "scheduled"},
            "max_participants": {"type": ["integer", "null"], "minimum": 2, "maximum": 100},
        },
    },
    "Appointment": {
        "type": "object",
        "required": ["id", "provider_id", "client_ids", "telehealth", "starts_at", "ends_at", "status",
                     "max_participants"],
        "properties": {
            "id": _ID, "provider_id": _ID, "client_ids": {"type": "array", "items": _ID},
            "telehealth": {"type": "boolean"}, "starts_at": _TIME, "ends_at": _TIME,
            "status": {"type": "string", "enum": ["scheduled", "cancelled", "completed", "no_show"]},
            "max_participants": {"type": ["integer", "null"]},
        },
    },
    "TokenIn": {"type": "object", "required": ["participant_id"], "additionalProperties": False,
                "properties": {"participant_id": _ID}},
    "Token": {"type": "object", "required": ["token", "expires_at", "join_url"],
              "properties": {"token": {"type": "string"}, "expires_at": _TIME, "join_url": {"type": "string"}}},
    "Participant": {
        "type": "object", "required": ["participant_id", "role", "presence", "since", "name"],
        "properties": {"participant_id": _ID, "role": {"type": "string", "enum": ["provider", "client"]},
                       "presence": {"type": "string", "enum": ["waiting", "admitted"]}, "since": _TIME,
                       "name": {"type": "string"}},
    },
    "Room": {
        "type": "object",
        "required": ["appointment_id", "opened_at", "closed_at", "close_reason", "node_id", "participants",
                     "waiting_count", "admitted_count"],
        "properties": {
            "appointment_id": _ID, "opened_at": _TIME, "closed_at": {"type": ["string", "null"]},
            "close_reason": {"type": "string"}, "node_id": {"type": "string"},
            "participants": {"type": "array", "items": {"$ref": "#/components/schemas/Participant"}},
            "waiting_count": {"type": "integer"}, "admitted_count": {"type": "integer"},
        },
    },
    "AdmitIn": {"type": "object", "additionalProperties": False, "properties": {}},
    "ReasonIn": {"type": "object", "additionalProperties": False,
                 "properties": {"reason": {"type": "string", "maxLength": 200}}},
    "MuteIn": {"type": "object", "additionalProperties": False,
               "properties": {"kind": {"type": "string", "enum": ["audio", "video"],
                                       "description": "Omit to mute both"},
                              "muted": {"type": "boolean", "default": True}}},
    "ActionResult": {
        "type": "object", "required": ["result", "room"],
        "properties": {"result": {"type": "string", "enum": ["admitted", "already_admitted", "cleared", "denied",
                                                             "removed", "muted"]},
                       "room": {"oneOf": [{"$ref": "#/components/schemas/Room"}, {"type": "null"}]}},
    },
    "AuditEntry": {
        "type": "object", "required": ["id", "at", "appointment_id", "action", "actor_id", "subject_id", "code"],
        "properties": {"id": {"type": "string"}, "at": _TIME, "appointment_id": _ID,
                       "action": {"type": "string"}, "actor_id": {"type": "string"},
                       "subject_id": {"type": "string"}, "code": {"type": "string"},
                       "count": {"type": "integer", "minimum": 1,
                                 "description": "a refusal repeated within the aggregation window: how many times"},
                       "last_at": {"oneOf": [_TIME, {"type": "null"}]}},
    },
}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "Invalid request", 401: "Missing or invalid API key", 403: "Not allowed",
             404: "Not found", 405: "Method not allowed", 408: "The body did not arrive in time (body_timeout)",
             409: "Conflict with the current state",
             413: "Body too large", 422: "Well-formed but breaks a rule (unknown provider or client, "
                                         "time range, roster size, a name with control characters)",
             503: "Store unavailable"}
    with_body = (408,) if 413 in statuses else ()  # an operation that reads a body may time out reading it
    return {str(s): _json(_ref("Error"), words[s]) for s in (*statuses, *with_body, 401, 503)}


def _body(name: str, required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": _ref(name)}}}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": _ID}


def openapi_document(server_url: str) -> dict[str, Any]:
    apt = _path_param("id", "Appointment id")
    put_errors = _errors(400, 413, 422)
    action_ops = {}
    for action, body, result_desc in (
            ("admit", "AdmitIn", "Admit a waiting participant (or clear an absent one)"),
            ("deny", "ReasonIn", "Deny a waiting participant"),
            ("remove", "ReasonIn", "Remove a participant; kept out until admitted again"),
            ("mute", "MuteIn", "Ask a participant's client to mute")):
        action_ops[f"/v1/rooms/{{id}}/participants/{{pid}}/{action}"] = {"post": {
            "summary": result_desc, "operationId": f"{action}Participant",
            "parameters": [apt, _path_param("pid", "Participant id")],
            "requestBody": _body(body, required=False),
            "responses": {"200": _json(_ref("ActionResult"), "Done"), **_errors(400, 403, 404, 409, 413)},
        }}
    return {
        "openapi": "3.1.0",
        "info": {"title": "telesfu control API", "version": "1.0.0",
                 "description": "Register providers, clients and telehealth appointments; mint join tokens; "
                                "watch and act on rooms and waiting rooms."},
        "servers": [{"url": server_url}],
        "security": [{"apiKey": []}],
        "components": {
            "securitySchemes": {"apiKey": {"type": "http", "scheme": "bearer"}},
            "schemas": _SCHEMAS,
        },
        "paths": {
            "/v1/providers/{id}": {
                "put": {"summary": "Create or replace a provider", "operationId": "putProvider",
                        "parameters": [_path_param("id", "Provider id")], "requestBody": _body("ProviderIn"),
                        "responses": {"200": _json(_ref("Provider"), "Replaced"),
                                      "201": _json(_ref("Provider"), "Created"), **put_errors}},
                "get": {"summary": "Get a provider", "operationId": "getProvider",
                        "parameters": [_path_param("id", "Provider id")],
                        "responses": {"200": _json(_ref("Provider"), "The provider"), **_errors(400, 404)}},
            },
            "/v1/clients/{id}": {
                "put": {"summary": "Create or replace a client", "operationId": "putClient",
                        "parameters": [_path_param("id", "Client id")], "requestBody": _body("ClientIn"),
                        "responses": {"200": _json(_ref("Client"), "Replaced"),
                                      "201": _json(_ref("Client"), "Created"), **put_errors}},
                "get": {"summary": "Get a client", "operationId": "getClient",
                        "parameters": [_path_param("id", "Client id")],
                        "responses": {"200": _json(_ref("Client"), "The client"), **_errors(400, 404)}},
            },
            "/v1/appointments/{id}": {
                "put": {"summary": "Create or replace an appointment (switch telehealth before it starts)",
                        "operationId": "putAppointment", "parameters": [apt], "requestBody": _body("AppointmentIn"),
                        "responses": {"200": _json(_ref("Appointment"), "Replaced"),
                                      "201": _json(_ref("Appointment"), "Created"),
                                      **_errors(400, 409, 413, 422)}},
                "get": {"summary": "Get an appointment", "operationId": "getAppointment", "parameters": [apt],
                        "responses": {"200": _json(_ref("Appointment"), "The appointment"), **_errors(400, 404)}},
            },
            "/v1/appointments/{id}/tokens": {
                "post": {"summary": "Mint a join token for a participant on the roster", "operationId": "mintToken",
                         "parameters": [apt], "requestBody": _body("TokenIn"),
                         "responses": {"201": _json(_ref("Token"), "Minted"), **_errors(400, 404, 413)}},
            },
            "/v1/rooms": {
                "get": {"summary": "Open rooms", "operationId": "listRooms",
                        "responses": {"200": _json({"type": "object", "required": ["rooms"],
                                                    "properties": {"rooms": {"type": "array",
                                                                             "items": _ref("Room")}}},
                                                   "Open rooms"), **_errors()}},
            },
            "/v1/rooms/{id}": {
                "get": {"summary": "A room, by appointment id", "operationId": "getRoom", "parameters": [apt],
                        "responses": {"200": _json(_ref("Room"), "The room"), **_errors(400, 404)}},
                "delete": {"summary": "End the session for everyone", "operationId": "endRoom", "parameters": [apt],
                           "responses": {"200": _json(_ref("Room"), "The closed room"), **_errors(400, 404)}},
            },
            "/v1/rooms/{id}/admit_all": {
                "post": {"summary": "Admit everyone in the waiting room", "operationId": "admitAll",
                         "parameters": [apt], "requestBody": _body("AdmitIn", required=False),
                         "responses": {"200": _json({"type": "object", "required": ["admitted"],
                                                     "properties": {"admitted": {"type": "array",
                                                                                 "items": _ID}}}, "Admitted"),
                                       **_errors(400, 403, 404, 413)}},
            },
            **action_ops,
            "/v1/audit": {
                "get": {"summary": "Audit log of one appointment, oldest first", "operationId": "getAudit",
                        "parameters": [{"name": "appointment_id", "in": "query", "required": True, "schema": _ID},
                                       {"name": "limit", "in": "query", "required": False,
                                        "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
                                       {"name": "after", "in": "query", "required": False,
                                        "description": "an entry id: page forward from it, oldest first "
                                                       "(export: start at 0, then pass next_after)",
                                        "schema": {"type": "integer", "minimum": 0,
                                                   "maximum": 999_999_999_999_999_999}}],
                        "responses": {"200": _json({"type": "object", "required": ["entries"],
                                                    "properties": {"entries": {"type": "array",
                                                                               "items": _ref("AuditEntry")},
                                                                   "next_after": {"oneOf": [{"type": "string"},
                                                                                            {"type": "null"}]}}},
                                                   "Entries"), **_errors(400)}},
            },
            "/v1/openapi.json": {"get": {"summary": "This document", "operationId": "openapi", "security": [],
                                         "responses": {"200": {"description": "OpenAPI document",
                                                               "content": {"application/json": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness", "operationId": "healthz", "security": [],
                                 "responses": {"200": _json({"type": "object"}, "Alive")}}},
            "/readyz": {"get": {"summary": "Readiness (store reachable, not draining)", "operationId": "readyz",
                                "security": [],
                                "responses": {"200": _json({"type": "object"}, "Ready"),
                                              "503": _json(_ref("Error"), "Not ready (not_ready) or shutting "
                                                                          "down (node_draining)")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "operationId": "metrics", "security": [],
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
        },
    }
