//! The OpenAPI 3.1 document of the billing API, served at `/api/openapi.json` and
//! rendered (offline, no script) at `/api/docs`. A test walks every operation of the
//! document against the router, so the two cannot drift apart.

use std::sync::LazyLock;

use axum::response::Response;
use serde_json::{Value, json};

use crate::api_docs::{self, error, json_content, ok, parameter, schema_ref};

fn tenant_header() -> Value {
    parameter(
        "X-Tenant-Id",
        "header",
        true,
        json!({"type": "string", "format": "uuid"}),
        "the tenant (customer) the call acts for; it must exist in the identity service",
    )
}

fn idempotency_header() -> Value {
    parameter(
        "Idempotency-Key",
        "header",
        false,
        json!({"type": "string", "minLength": 1, "maxLength": 255}),
        "makes retries safe (Stripe's semantics, scoped by tenant, kept at least 24 hours): the first request's response is saved with its effect; the same key with the same method, path and body replays it (marked `Idempotent-Replayed: true`); with another request it is 409 `conflict`",
    )
}

fn id(what: &str) -> Value {
    parameter(
        "id",
        "path",
        true,
        json!({"type": "string", "format": "uuid"}),
        &format!("the {what}'s id"),
    )
}

/// An operation with the common error answers; `tenant` adds the tenant header.
fn operation(
    summary: &str,
    description: &str,
    tenant: bool,
    mut parameters: Vec<Value>,
    body: Option<Value>,
    mut responses: Value,
) -> Value {
    if tenant {
        parameters.insert(0, tenant_header());
    }
    if let Some(map) = responses.as_object_mut() {
        map.insert(
            "400".into(),
            error("bad input (`invalid_input`, naming the field)"),
        );
        map.insert("401".into(), error("missing or wrong admin token"));
        map.insert("503".into(), error("a backend is unavailable; retry"));
        if body.is_some() {
            map.insert("413".into(), error("body too large (`payload_too_large`)"));
        }
    }
    let mut op = json!({
        "summary": summary,
        "description": description,
        "parameters": parameters,
        "responses": responses,
        "security": [{ "adminToken": [] }],
    });
    if let (Some(schema), Some(map)) = (body, op.as_object_mut()) {
        map.insert(
            "requestBody".into(),
            json!({ "required": true, "content": json_content(schema) }),
        );
    }
    op
}

/// A catalog operation: no tenant.
fn catalog(
    summary: &str,
    description: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    operation(summary, description, false, parameters, body, responses)
}

/// A read of tenant data.
fn read(summary: &str, description: &str, parameters: Vec<Value>, responses: Value) -> Value {
    operation(summary, description, true, parameters, None, responses)
}

/// A change of tenant data without an idempotency key (webhook endpoints: a retry of
/// a change with the same `version` is refused as stale, a retried create adds a
/// second endpoint the tenant can delete).
fn tenant_write(
    summary: &str,
    description: &str,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Value,
) -> Value {
    operation(summary, description, true, parameters, body, responses)
}

/// A change of tenant data: with the idempotency key, and 409 on its misuse (and on
/// a state that does not allow the change).
fn change(
    summary: &str,
    description: &str,
    mut parameters: Vec<Value>,
    body: Option<Value>,
    mut responses: Value,
) -> Value {
    parameters.push(idempotency_header());
    if let Some(map) = responses.as_object_mut() {
        map.entry("409").or_insert_with(|| {
            error("the key was used with another request, or the record's state does not allow it (`conflict`)")
        });
    }
    operation(summary, description, true, parameters, body, responses)
}

/// `op` with its request body optional (an empty body takes the defaults).
fn optional_body(mut op: Value) -> Value {
    if let Some(body) = op.get_mut("requestBody").and_then(Value::as_object_mut) {
        body.insert("required".into(), json!(false));
    }
    op
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn decimal(description: &str) -> Value {
    json!({"type": "string", "description": description, "examples": ["12.5"]})
}

fn minor(description: &str) -> Value {
    json!({"type": "integer", "description": format!("{description}, in minor units (cents)")})
}

fn time(description: &str) -> Value {
    json!({"type": "string", "format": "date-time", "description": description})
}

fn uuid(description: &str) -> Value {
    json!({"type": "string", "format": "uuid", "description": description})
}

fn list(name: &str, item: &str) -> Value {
    json!({
        "type": "object",
        "properties": {name: {"type": "array", "items": schema_ref(item)}},
    })
}

/// Every component schema: the groups below, merged (one `json!` each keeps the macro
/// under the recursion limit).
fn schemas() -> Value {
    let mut all = serde_json::Map::new();
    for group in [
        catalog_schemas(),
        customer_schemas(),
        subscription_schemas(),
        invoice_schemas(),
    ] {
        if let Value::Object(group) = group {
            all.extend(group);
        }
    }
    Value::Object(all)
}

fn catalog_schemas() -> Value {
    json!({
        "Error": {
            "description": "every error answer",
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {
                    "type": "object",
                    "description": "`code` (machine-readable: `invalid_input`, `unauthenticated`, `not_found`, `already_exists`, `conflict`, `payload_too_large`, `unavailable`, `internal`), `message` (for people), `field` (the offending input, when known)",
                },
            },
        },
        "NewProduct": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": string("1–200 characters, shown on invoices"),
                "description": string("free text"),
            },
        },
        "Product": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "name": {"type": "string"},
                "description": {"type": "string"},
                "created_at": time("when it was created"),
            },
        },
        "ProductList": list("products", "Product"),
        "Tier": {
            "type": "object",
            "properties": {
                "up_to": {"type": ["string", "null"], "description": "the last unit of the tier (inclusive); absent on the last, unbounded tier"},
                "unit_amount": decimal("per unit in the tier, in major units"),
                "flat_amount": decimal("added when the tier is reached, in major units"),
            },
        },
        "Price": {
            "type": "object",
            "required": ["description", "type", "pricing"],
            "properties": {
                "id": uuid("its id (made when absent at creation)"),
                "description": string("what invoice lines call it"),
                "type": {"type": "string", "enum": ["fee", "metered"], "description": "`fee`: per period, in advance, quantity = seats, prorated on changes; `metered`: the period's total of `meter`, in arrears"},
                "meter": string("the usage meter's key (`metered` only); the meter must keep windows the billing periods align to (`minute` or `hour` for periods that do not start at midnight UTC)"),
                "pricing": {
                    "type": "object",
                    "required": ["model"],
                    "description": "`{\"model\": \"flat\", \"amount\"}`, `{\"model\": \"per_unit\", \"unit_amount\"}`, `{\"model\": \"graduated\" | \"volume\", \"tiers\": [Tier]}` or `{\"model\": \"package\", \"size\", \"amount\"}`; amounts are decimals in major units, never negative",
                    "properties": {
                        "model": {"type": "string", "enum": ["flat", "per_unit", "graduated", "volume", "package"]},
                        "amount": decimal("flat or package amount"),
                        "unit_amount": decimal("per unit"),
                        "size": decimal("units per package"),
                        "tiers": {"type": "array", "items": schema_ref("Tier")},
                    },
                },
                "included_units": decimal("free units per period, taken off first"),
                "rounding": {"type": "string", "enum": ["half_even", "half_up", "up", "down"], "description": "how the exact amount becomes minor units (default `half_even`)"},
            },
        },
        "NewPlan": {
            "type": "object",
            "required": ["product_id", "name", "currency", "interval", "prices"],
            "properties": {
                "product_id": uuid("the product it prices"),
                "name": string("1–200 characters"),
                "currency": string("ISO 4217 code, e.g. `USD`"),
                "interval": {"type": "string", "enum": ["month", "year"]},
                "trial_days": {"type": "integer", "description": "free days of new subscriptions"},
                "prices": {"type": "array", "items": schema_ref("Price"), "minItems": 1, "maxItems": 20, "description": "metered prices on distinct meters"},
            },
        },
        "Plan": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "product_id": uuid("the product"),
                "name": {"type": "string"},
                "currency": {"type": "string"},
                "interval": {"type": "string", "enum": ["month", "year"]},
                "trial_days": {"type": "integer"},
                "prices": {"type": "array", "items": schema_ref("Price")},
                "active": {"type": "boolean", "description": "whether new subscriptions may use it"},
                "version": {"type": "integer", "description": "1 at creation, +1 per update"},
                "created_at": time("when it was created"),
            },
        },
        "PlanList": list("plans", "Plan"),
        "PlanUpdate": {
            "type": "object",
            "required": ["active"],
            "properties": {"active": {"type": "boolean", "description": "`false` archives (subscribers stay, no new ones), `true` reactivates"}},
        },
    })
}

fn customer_schemas() -> Value {
    json!({
        "Address": {
            "type": "object",
            "properties": {
                "line1": {"type": "string"}, "line2": {"type": "string"},
                "city": {"type": "string"}, "postal_code": {"type": "string"},
                "state": {"type": "string"}, "country": string("ISO 3166-1 alpha-2"),
            },
        },
        "CustomerInput": {
            "type": "object",
            "required": ["name", "email", "currency"],
            "properties": {
                "name": string("the name on invoices"),
                "email": string("where invoices are sent"),
                "address": schema_ref("Address"),
                "currency": string("ISO 4217 code; fixed once set (a change is 409 `conflict`)"),
                "tax_rate": decimal("percent, 0–100, applied to each invoice's subtotal"),
                "provider_customer_id": {"type": ["string", "null"], "description": "the payment provider's customer id"},
                "invoice_prefix": {"type": ["string", "null"], "description": "3–12 uppercase letters or digits; derived from the tenant id when absent"},
            },
        },
        "Customer": {
            "type": "object",
            "properties": {
                "tenant_id": uuid("the tenant billed"),
                "name": {"type": "string"},
                "email": {"type": "string"},
                "address": schema_ref("Address"),
                "currency": {"type": "string"},
                "tax_rate": decimal("percent"),
                "provider_customer_id": {"type": "string"},
                "balance": minor("credit applied to the next invoices"),
                "invoice_prefix": {"type": "string"},
                "next_invoice_number": {"type": "integer"},
                "version": {"type": "integer"},
                "created_at": time("when it was created"),
            },
        },
    })
}

fn subscription_schemas() -> Value {
    json!({
        "Period": {
            "type": "object",
            "properties": {"start": time("first instant"), "end": time("first instant after it")},
        },
        "NewSubscription": {
            "type": "object",
            "required": ["plan_id"],
            "properties": {
                "plan_id": uuid("an active plan in the customer's currency"),
                "quantity": {"type": "integer", "description": "seats: the quantity of fee prices, 1–1000000 (default 1)"},
                "trial_days": {"type": ["integer", "null"], "description": "instead of the plan's (0: no trial)"},
                "billing_anchor_day": {"type": ["integer", "null"], "description": "bill on this day of the month (1–31), at midnight UTC; the first period is prorated"},
                "backdate_start_date": {"type": ["string", "null"], "format": "date-time", "description": "start in the past (at most a year): periods count from then; ended ones are closed by the next scheduler pass"},
            },
        },
        "Subscription": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "tenant_id": uuid("the customer"),
                "plan_id": uuid("the plan in effect"),
                "quantity": {"type": "integer"},
                "status": {"type": "string", "enum": ["trialing", "active", "past_due", "paused", "canceled"]},
                "anchor": time("periods are counted from it"),
                "current_period": schema_ref("Period"),
                "trial_end": time("when the trial ends"),
                "cancel_at_period_end": {"type": "boolean"},
                "canceled_at": time("when it was canceled"),
                "ended_at": time("when it stopped"),
                "paused_at": time("when it was paused"),
                "scheduled_change": {"type": "object", "description": "`plan_id` and `quantity` from the next period on"},
                "open": {"type": "boolean", "description": "whether its current period will still be invoiced"},
                "latest_invoice_id": uuid("its most recent invoice"),
                "version": {"type": "integer"},
                "created_at": time("when it was created"),
            },
        },
        "SubscriptionList": list("subscriptions", "Subscription"),
        "SubscriptionChange": {
            "type": "object",
            "properties": {
                "subscription": schema_ref("Subscription"),
                "invoice": schema_ref("Invoice"),
            },
            "description": "the subscription after the change, and the invoice the change made (absent when none)",
        },
        "PlanChange": {
            "type": "object",
            "properties": {
                "plan_id": uuid("the new plan (same currency and interval); the current one when absent"),
                "quantity": {"type": "integer", "description": "the new quantity; unchanged when absent"},
                "effective": {"type": "string", "enum": ["now", "period_end"], "description": "`now` (default): prorated on an invoice of its own; `period_end`: when the current period ends, nothing prorated"},
            },
        },
        "Preview": {
            "type": "object",
            "properties": {"lines": {"type": "array", "items": schema_ref("InvoiceLine"), "description": "the proration lines a change made now would invoice (before tax); empty when nothing is prorated"}},
        },
        "Cancel": {
            "type": "object",
            "properties": {
                "at_period_end": {"type": "boolean", "description": "at the end of the current period (reactivatable until then) instead of now"},
                "prorate": {"type": "boolean", "description": "when canceling now: credit the unused time of the fees"},
            },
        },
    })
}

fn invoice_schemas() -> Value {
    json!({
        "Payment": {
            "type": "object",
            "properties": {"provider_payment_id": string("the payment's reference (a transfer, a provider's payment id)")},
        },
        "InvoiceLine": {
            "type": "object",
            "properties": {
                "kind": {"type": "string", "enum": ["fee", "usage", "proration_credit", "proration_charge"]},
                "description": {"type": "string"},
                "price_id": uuid("the price it comes from"),
                "meter": string("the meter of a usage line"),
                "quantity": decimal("units of usage, or seats"),
                "period": schema_ref("Period"),
                "amount": minor("before tax (negative for credits)"),
                "tax": minor("its share of the invoice's tax"),
            },
        },
        "Invoice": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "tenant_id": uuid("the customer"),
                "subscription_id": uuid("the subscription it bills"),
                "number": string("`PREFIX-0001`, given at finalization, without gaps per tenant"),
                "status": {"type": "string", "enum": ["draft", "open", "paid", "void", "uncollectible"]},
                "billing_reason": {"type": "string", "enum": ["subscription_create", "subscription_cycle", "subscription_update", "final"]},
                "billing_key": string("what makes it unique (the subscription and period it closes, or the change it prices)"),
                "currency": {"type": "string"},
                "lines": {"type": "array", "items": schema_ref("InvoiceLine")},
                "tax_rate": decimal("percent"),
                "subtotal": minor("sum of the lines"),
                "tax": minor("tax on the subtotal"),
                "total": minor("subtotal + tax"),
                "balance_applied": minor("customer credit used"),
                "credited": minor("total of its credit notes"),
                "amount_due": minor("what is owed"),
                "amount_paid": minor("what was paid"),
                "payment_attempts": {"type": "integer"},
                "next_payment_attempt": time("when the next attempt is due"),
                "provider_payment_id": {"type": "string"},
                "created_at": time("when it was created"),
                "finalized_at": time("when it was finalized"),
                "paid_at": time("when it was paid"),
                "closed_at": time("when it was voided or marked uncollectible"),
                "version": {"type": "integer"},
            },
        },
        "InvoiceList": list("invoices", "Invoice"),
        "CreditNoteLine": {
            "type": "object",
            "required": ["description", "amount"],
            "properties": {
                "description": {"type": "string"},
                "amount": minor("credited, tax included, positive"),
            },
        },
        "NewCreditNote": {
            "type": "object",
            "required": ["reason", "lines"],
            "properties": {
                "reason": string("why (1–200 characters)"),
                "lines": {"type": "array", "items": schema_ref("CreditNoteLine"), "minItems": 1, "maxItems": 100},
            },
        },
        "CreditNote": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "tenant_id": uuid("the customer"),
                "invoice_id": uuid("the invoice corrected"),
                "number": string("`<invoice number>-CN<n>`"),
                "reason": {"type": "string"},
                "lines": {"type": "array", "items": schema_ref("CreditNoteLine")},
                "total": minor("sum of the lines"),
                "outcome": {"type": "string", "enum": ["reduced_amount_due", "customer_balance"], "description": "lowered what an open invoice owes, or credited the customer's balance (paid invoice)"},
                "created_at": time("when it was issued"),
            },
        },
        "CreditNoteList": list("credit_notes", "CreditNote"),
        "NewWebhookEndpoint": {
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": string("where events are POSTed (https; a public address)"),
                "description": string("what it is for"),
                "event_types": {"type": "array", "items": {"type": "string"}, "description": "the event types sent (`tenancy.billing.invoice.paid`, …); empty or `*` for all"},
                "enabled": {"type": "boolean", "description": "true when absent"},
            },
        },
        "WebhookEndpointChange": {
            "type": "object",
            "required": ["version"],
            "properties": {
                "version": {"type": "integer", "description": "the version read (409 `conflict` when stale)"},
                "url": string("a new URL"),
                "description": string("a new description"),
                "event_types": {"type": "array", "items": {"type": "string"}},
                "enabled": {"type": "boolean"},
            },
        },
        "RollSecret": {
            "type": "object",
            "required": ["version"],
            "properties": {
                "version": {"type": "integer", "description": "the version read"},
                "overlap_seconds": {"type": "integer", "description": "how long the old secret keeps signing too (at most 7 days)"},
            },
        },
        "WebhookEndpoint": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "tenant_id": uuid("the tenant"),
                "url": {"type": "string"},
                "description": {"type": "string"},
                "event_types": {"type": "array", "items": {"type": "string"}},
                "secret": string("`whsec_…`: signs every delivery (`Tenancy-Signature: t=…,v1=…`, HMAC-SHA256 of `t.body`); only in the answers of create and roll_secret"),
                "enabled": {"type": "boolean"},
                "version": {"type": "integer"},
                "created_at": time("when it was created"),
            },
        },
        "WebhookEndpointList": list("webhook_endpoints", "WebhookEndpoint"),
        "WebhookDelivery": {
            "type": "object",
            "properties": {
                "id": uuid("its id"),
                "endpoint_id": uuid("the endpoint"),
                "event_id": uuid("the event delivered"),
                "event_type": {"type": "string"},
                "status": {"type": "string", "enum": ["pending", "succeeded", "failed"]},
                "attempts": {"type": "integer"},
                "next_attempt_at": time("when it is tried again"),
                "last_status_code": {"type": "integer"},
                "last_error": {"type": "string"},
                "history": {"type": "array", "items": {"type": "object"}, "description": "every attempt: number, time, status code, error"},
            },
        },
        "WebhookDeliveryList": list("deliveries", "WebhookDelivery"),
        "StripeAck": {
            "type": "object",
            "properties": {
                "received": {"type": "boolean"},
                "outcome": {"type": "string", "enum": ["applied", "duplicate", "ignored"]},
            },
        },
    })
}

fn build() -> Value {
    let not_found = |what: &str| error(&format!("no such {what} (`not_found`)"));
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "tenancy billing API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Billing: a catalog of products and plans (fees and metered prices), one billing profile per tenant, subscriptions with proration, invoices priced from metered usage, credit notes. Every `/v1` call needs `Authorization: Bearer <admin token>`; calls on a tenant's data name it in `X-Tenant-Id`. Amounts on records are integer minor units; prices are decimals in major units. Changes of a tenant's data take an optional `Idempotency-Key`.",
        },
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "paths": {
            "/v1/products": {
                "post": catalog("create a product", "the catalog is shared by every tenant; `Idempotency-Key` is not honored here", vec![], Some(schema_ref("NewProduct")), json!({
                    "201": ok("created", schema_ref("Product")),
                })),
                "get": catalog("list products", "oldest first", vec![], None, json!({
                    "200": ok("the products", schema_ref("ProductList")),
                })),
            },
            "/v1/products/{id}": {
                "get": catalog("read a product", "", vec![id("product")], None, json!({
                    "200": ok("the product", schema_ref("Product")),
                    "404": not_found("product"),
                })),
            },
            "/v1/plans": {
                "post": catalog("create a plan", "1–20 prices in one currency; price ids are made when absent; `Idempotency-Key` is not honored here", vec![], Some(schema_ref("NewPlan")), json!({
                    "201": ok("created", schema_ref("Plan")),
                })),
                "get": catalog("list plans", "oldest first, archived ones included", vec![], None, json!({
                    "200": ok("the plans", schema_ref("PlanList")),
                })),
            },
            "/v1/plans/{id}": {
                "get": catalog("read a plan", "", vec![id("plan")], None, json!({
                    "200": ok("the plan", schema_ref("Plan")),
                    "404": not_found("plan"),
                })),
                "patch": catalog("archive or reactivate a plan", "archived plans keep their subscribers but take no new ones", vec![
                    id("plan"),
                    parameter("expected_version", "query", true, json!({"type": "integer"}), "the version read (optimistic concurrency: a stale one is 409 `conflict`)"),
                ], Some(schema_ref("PlanUpdate")), json!({
                    "200": ok("the plan", schema_ref("Plan")),
                    "404": not_found("plan"),
                    "409": error("stale `expected_version` (`conflict`)"),
                })),
            },
            "/v1/customer": {
                "put": change("set the tenant's billing profile", "creates or replaces it; the currency cannot change once set", vec![], Some(schema_ref("CustomerInput")), json!({
                    "200": ok("the profile", schema_ref("Customer")),
                })),
                "get": read("read the tenant's billing profile", "", vec![], json!({
                    "200": ok("the profile", schema_ref("Customer")),
                    "404": error("the tenant has no billing profile yet"),
                })),
            },
            "/v1/subscriptions": {
                "post": change("subscribe the tenant to a plan", "with a trial (nothing charged until it ends) or with the first period's fees invoiced now (finalized and numbered); the tenant needs a billing profile in the plan's currency", vec![], Some(schema_ref("NewSubscription")), json!({
                    "201": ok("the subscription and its first invoice", schema_ref("SubscriptionChange")),
                })),
                "get": read("list the tenant's subscriptions", "oldest first", vec![], json!({
                    "200": ok("the subscriptions", schema_ref("SubscriptionList")),
                })),
            },
            "/v1/subscriptions/{id}": {
                "get": read("read a subscription", "", vec![id("subscription")], json!({
                    "200": ok("the subscription", schema_ref("Subscription")),
                    "404": not_found("subscription"),
                })),
            },
            "/v1/subscriptions/{id}/preview": {
                "post": operation("preview a plan change", "the proration lines the change would invoice if made now; nothing is written", true, vec![id("subscription")], Some(schema_ref("PlanChange")), json!({
                    "200": ok("the lines", schema_ref("Preview")),
                    "404": not_found("subscription"),
                    "409": error("the subscription is canceled (`conflict`)"),
                })),
            },
            "/v1/subscriptions/{id}/change": {
                "post": change("change the plan or quantity", "now (prorated, on an invoice of its own; a net credit goes to the balance) or at the end of the period", vec![id("subscription")], Some(schema_ref("PlanChange")), json!({
                    "200": ok("the subscription and the proration invoice", schema_ref("SubscriptionChange")),
                    "404": not_found("subscription"),
                })),
            },
            "/v1/subscriptions/{id}/cancel": {
                "post": optional_body(change("cancel", "now (the default, also for an empty body; the current period is still closed for its usage) or at the end of the period", vec![id("subscription")], Some(schema_ref("Cancel")), json!({
                    "200": ok("the subscription, and the credit invoice of a prorated cancellation", schema_ref("SubscriptionChange")),
                    "404": not_found("subscription"),
                }))),
            },
            "/v1/subscriptions/{id}/reactivate": {
                "post": change("undo a cancellation at period end", "before the period ends; no body", vec![id("subscription")], None, json!({
                    "200": ok("the subscription", schema_ref("Subscription")),
                    "404": not_found("subscription"),
                })),
            },
            "/v1/subscriptions/{id}/pause": {
                "post": change("pause", "no fees are invoiced for periods that start while paused; usage still is; no body", vec![id("subscription")], None, json!({
                    "200": ok("the subscription", schema_ref("Subscription")),
                    "404": not_found("subscription"),
                })),
            },
            "/v1/subscriptions/{id}/resume": {
                "post": change("resume", "fees are invoiced again from the next period; no body", vec![id("subscription")], None, json!({
                    "200": ok("the subscription", schema_ref("Subscription")),
                    "404": not_found("subscription"),
                })),
            },
            "/v1/invoices": {
                "get": read("list the tenant's invoices", "oldest first", vec![
                    parameter("status", "query", false, json!({"type": "string", "enum": ["draft", "open", "paid", "void", "uncollectible"]}), "only in this state"),
                    parameter("subscription", "query", false, json!({"type": "string", "format": "uuid"}), "only this subscription's"),
                    parameter("limit", "query", false, json!({"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}), "at most this many"),
                ], json!({
                    "200": ok("the invoices", schema_ref("InvoiceList")),
                })),
            },
            "/v1/invoices/{id}": {
                "get": read("read an invoice", "", vec![id("invoice")], json!({
                    "200": ok("the invoice", schema_ref("Invoice")),
                    "404": not_found("invoice"),
                })),
            },
            "/v1/invoices/{id}/finalize": {
                "post": change("finalize a draft", "numbered (no gaps per tenant), immutable, owed; no body", vec![id("invoice")], None, json!({
                    "200": ok("the invoice", schema_ref("Invoice")),
                    "404": not_found("invoice"),
                })),
            },
            "/v1/invoices/{id}/void": {
                "post": change("void a draft or open invoice", "kept, owed no more (paid invoices are corrected with credit notes); no body", vec![id("invoice")], None, json!({
                    "200": ok("the invoice", schema_ref("Invoice")),
                    "404": not_found("invoice"),
                })),
            },
            "/v1/invoices/{id}/pay": {
                "post": optional_body(change("mark an open invoice paid", "an operator records a payment collected outside the provider (a transfer); a past-due subscription becomes active again; paying a paid invoice changes nothing", vec![id("invoice")], Some(schema_ref("Payment")), json!({
                    "200": ok("the invoice", schema_ref("Invoice")),
                    "404": not_found("invoice"),
                }))),
            },
            "/v1/invoices/{id}/credit_notes": {
                "post": change("issue a credit note", "against an open invoice (lowers what it owes) or a paid one (credits the balance); the credited total never exceeds the invoice's total", vec![id("invoice")], Some(schema_ref("NewCreditNote")), json!({
                    "201": ok("the credit note", schema_ref("CreditNote")),
                    "404": not_found("invoice"),
                })),
                "get": read("list an invoice's credit notes", "oldest first", vec![id("invoice")], json!({
                    "200": ok("the credit notes", schema_ref("CreditNoteList")),
                    "404": not_found("invoice"),
                })),
            },
            "/v1/webhook_endpoints": {
                "post": tenant_write("add a webhook endpoint", "billing events of the tenant are POSTed to it, signed with its secret (shown in this answer only), retried with backoff", vec![], Some(schema_ref("NewWebhookEndpoint")), json!({
                    "201": ok("created, with its secret", schema_ref("WebhookEndpoint")),
                    "429": error("the tenant has the most endpoints allowed"),
                })),
                "get": read("list the webhook endpoints", "oldest first, without secrets", vec![], json!({
                    "200": ok("the endpoints", schema_ref("WebhookEndpointList")),
                })),
            },
            "/v1/webhook_endpoints/{id}": {
                "get": read("read a webhook endpoint", "without its secret", vec![id("endpoint")], json!({
                    "200": ok("the endpoint", schema_ref("WebhookEndpoint")),
                    "404": not_found("endpoint"),
                })),
                "patch": tenant_write("change a webhook endpoint", "each given field replaces the stored one", vec![id("endpoint")], Some(schema_ref("WebhookEndpointChange")), json!({
                    "200": ok("the endpoint", schema_ref("WebhookEndpoint")),
                    "404": not_found("endpoint"),
                    "409": error("stale `version` (`conflict`)"),
                })),
                "delete": tenant_write("delete a webhook endpoint", "and its delivery records", vec![id("endpoint")], None, json!({
                    "204": {"description": "deleted"},
                    "404": not_found("endpoint"),
                })),
            },
            "/v1/webhook_endpoints/{id}/roll_secret": {
                "post": tenant_write("roll an endpoint's secret", "a new secret, shown in this answer only; the old one keeps signing for `overlap_seconds`", vec![id("endpoint")], Some(schema_ref("RollSecret")), json!({
                    "200": ok("the endpoint with its new secret", schema_ref("WebhookEndpoint")),
                    "404": not_found("endpoint"),
                    "409": error("stale `version` (`conflict`)"),
                })),
            },
            "/v1/webhook_endpoints/{id}/deliveries": {
                "get": read("list an endpoint's deliveries", "newest first; `before` (a delivery id) pages back, `limit` 1–100 (50)", vec![id("endpoint"),
                    parameter("before", "query", false, json!({"type": "string", "format": "uuid"}), "only deliveries older than this one"),
                    parameter("limit", "query", false, json!({"type": "integer", "minimum": 1, "maximum": 100}), "at most this many")], json!({
                    "200": ok("the deliveries", schema_ref("WebhookDeliveryList")),
                    "404": not_found("endpoint"),
                })),
            },
            "/v1/webhook_deliveries/{id}": {
                "get": read("read a webhook delivery", "with every attempt", vec![id("delivery")], json!({
                    "200": ok("the delivery", schema_ref("WebhookDelivery")),
                    "404": not_found("delivery"),
                })),
            },
            "/webhooks/stripe": {
                "post": {
                    "summary": "Stripe's webhook events",
                    "description": "verified with the `Stripe-Signature` header (HMAC-SHA256 over `t.raw_body` with the configured `stripe_webhook_secret`, 300 s tolerance) — no admin token; `payment_intent.succeeded` and `invoice.paid` pay the invoice named in the object's `metadata.invoice_id` (of `metadata.tenant_id`), `payment_intent.payment_failed` starts dunning; each event id is applied once, in any order",
                    "parameters": [parameter("Stripe-Signature", "header", true, json!({"type": "string"}), "`t=<unix time>,v1=<hex signature>`")],
                    "requestBody": {"required": true, "content": json_content(json!({"type": "object", "description": "a Stripe event"}))},
                    "responses": {
                        "200": ok("received", schema_ref("StripeAck")),
                        "400": error("a verified body that is not a Stripe event"),
                        "401": error("missing or invalid signature (`unauthenticated`)"),
                        "503": error("no webhook secret is configured, or a backend is unavailable; Stripe retries"),
                    },
                    "security": [],
                },
            },
        },
    })
}

/// The billing API's OpenAPI document.
pub fn document() -> &'static Value {
    static DOCUMENT: LazyLock<Value> = LazyLock::new(build);
    &DOCUMENT
}

/// `GET /api/openapi.json`.
pub(super) async fn document_handler() -> Response {
    api_docs::document_response(document())
}

/// `GET /api/docs`.
pub(super) async fn docs_handler() -> Response {
    api_docs::docs_response(document())
}
