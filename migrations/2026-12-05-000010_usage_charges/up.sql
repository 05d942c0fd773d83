-- Usage charges: what the backend services that run an organization's apps
-- and databases report it owes for their use (Stripe's pending invoice items).
-- A charge waits, pending, until the billing period its usage ended in closes;
-- the closer puts it on that period's invoice and marks it billed with the
-- invoice's id, in the invoice's transaction.
--
-- Like invoices, charges are financial records: no foreign key to the
-- organization, so a billed charge outlives a purged organization beside its
-- invoice. (A deleted organization's final invoice takes every pending charge,
-- and no charge is reported for it afterwards, so none is left pending.)
CREATE TABLE usage_charges (
    id            uuid PRIMARY KEY,
    org_id        uuid NOT NULL,
    description   text NOT NULL CHECK (length(description) BETWEEN 1 AND 200),
    -- Capped like vouchers: no invoice's sum of charges can overflow.
    amount_minor  bigint NOT NULL CHECK (amount_minor BETWEEN 1 AND 1000000000000),
    currency      text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- The registered resource the usage was of, when reported. No foreign
    -- key: the resource may be unregistered before the charge is billed.
    resource_id   uuid,
    usage_start   timestamptz NOT NULL,
    usage_end     timestamptz NOT NULL,
    -- Who reported it (`services/{subject}`) and under which request id: a
    -- retried report finds its first charge here.
    reported_by   text NOT NULL,
    request_id    uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    -- Set once it is on an invoice, in the invoice's currency.
    invoice_id    uuid,
    -- Set when a pending charge is withdrawn (DeleteUsageCharge); kept so a
    -- retried report of it is recognised rather than billed again.
    deleted_at    timestamptz,
    CHECK (usage_end >= usage_start),
    CHECK (invoice_id IS NULL OR deleted_at IS NULL),
    UNIQUE (reported_by, request_id)
);

-- A billed charge is in its invoice's currency.
ALTER TABLE invoices ADD CONSTRAINT invoices_id_currency UNIQUE (id, currency);
ALTER TABLE usage_charges ADD CONSTRAINT usage_charges_invoice
    FOREIGN KEY (invoice_id, currency) REFERENCES invoices (id, currency);

-- ListUsageCharges pages through an organization's charges by (created_at, id);
-- the closer finds the pending ones by their end.
CREATE INDEX usage_charges_org ON usage_charges (org_id, created_at, id);
CREATE INDEX usage_charges_pending ON usage_charges (org_id, usage_end)
    WHERE invoice_id IS NULL AND deleted_at IS NULL;
CREATE INDEX usage_charges_invoice ON usage_charges (invoice_id) WHERE invoice_id IS NOT NULL;

-- A billed charge keeps its invoice, and what the invoice billed: it is never
-- changed, moved to another invoice, withdrawn or deleted.
CREATE FUNCTION usage_charges_keep_billed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.invoice_id IS NOT NULL THEN
        RAISE EXCEPTION 'usage charge % is billed on invoice % and cannot change',
            OLD.id, OLD.invoice_id USING ERRCODE = 'check_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER usage_charges_keep_billed BEFORE UPDATE OR DELETE ON usage_charges
    FOR EACH ROW EXECUTE FUNCTION usage_charges_keep_billed();
