//! Identifiers of billing records: UUID v7 newtypes, one per kind.

tenancy_core::id_type!(
    /// Identifies a product of the catalog (what is sold; plans price it).
    ProductId,
    "product"
);
tenancy_core::id_type!(
    /// Identifies a plan: a set of prices billed together on one interval.
    PlanId,
    "plan"
);
tenancy_core::id_type!(
    /// Identifies one price of a plan (a fee or a metered component).
    PriceId,
    "price"
);
tenancy_core::id_type!(
    /// Identifies a subscription of a tenant to a plan.
    SubscriptionId,
    "subscription"
);
tenancy_core::id_type!(
    /// Identifies an invoice.
    InvoiceId,
    "invoice"
);
tenancy_core::id_type!(
    /// Identifies a credit note (a correction of a finalized invoice).
    CreditNoteId,
    "credit_note"
);
tenancy_core::id_type!(
    /// Identifies a payment attempt of an invoice.
    PaymentId,
    "payment"
);
tenancy_core::id_type!(
    /// Identifies a tenant's webhook endpoint (where its billing events are sent).
    WebhookEndpointId,
    "webhook_endpoint"
);
tenancy_core::id_type!(
    /// Identifies one delivery attempt series of an event to a webhook endpoint.
    WebhookDeliveryId,
    "webhook_delivery"
);
