DROP TABLE invoice_payments;
DROP INDEX invoices_open_due;
ALTER TABLE invoices
    DROP COLUMN state,
    DROP COLUMN due_at,
    DROP COLUMN paid_at;
