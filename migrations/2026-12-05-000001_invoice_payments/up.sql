-- Invoices get a payment state. A backend service records each charge's outcome
-- (RecordInvoicePayment) by the payment processor's reference, once: the
-- reference is the key, so a webhook delivered twice, to two replicas at once,
-- records one attempt.
ALTER TABLE invoices
    ADD COLUMN state   text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'paid')),
    ADD COLUMN due_at  timestamptz,
    ADD COLUMN paid_at timestamptz;

-- Existing invoices: a zero total was settled when it was issued. Nobody was
-- ever told a due date for the others, so their term (the default
-- --invoice-due, 14 days) starts now rather than at issue: no organization
-- turns past due the moment orgd is upgraded, and the payment processor's side
-- has the term to record what was paid before.
UPDATE invoices SET state = 'paid', paid_at = created_at,
    due_at = created_at + interval '14 days'
WHERE total_minor = 0;
UPDATE invoices SET due_at = GREATEST(created_at, now()) + interval '14 days'
WHERE total_minor <> 0;

-- The defaults stay: a replica still running the previous binary, during a
-- rolling upgrade, issues invoices without these columns, as open and due
-- after the default term.
ALTER TABLE invoices
    ALTER COLUMN due_at SET DEFAULT now() + interval '14 days',
    ALTER COLUMN due_at SET NOT NULL,
    ADD CONSTRAINT invoices_paid_has_time CHECK ((state = 'paid') = (paid_at IS NOT NULL));

-- Past due: an organization's open invoices, by due time (GetSubscription).
CREATE INDEX invoices_open_due ON invoices (org_id, due_at) WHERE state = 'open';

-- Every recorded attempt, keyed by the processor's reference: a replay finds
-- its first recording here, and a reference names one attempt on one invoice.
-- The invoice shows the one that paid it and the last that failed.
CREATE TABLE invoice_payments (
    processor_reference text PRIMARY KEY,
    invoice_id          uuid NOT NULL REFERENCES invoices (id) ON DELETE CASCADE,
    outcome             text NOT NULL CHECK (outcome IN ('succeeded', 'failed')),
    failure_message     text CHECK ((outcome = 'failed') = (failure_message IS NOT NULL)),
    recorded_by         text NOT NULL,
    recorded_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_payments_invoice ON invoice_payments (invoice_id, recorded_at DESC);
-- An invoice is paid once, whatever the number of replicas or webhook retries.
CREATE UNIQUE INDEX invoice_payments_one_success ON invoice_payments (invoice_id)
    WHERE outcome = 'succeeded';
