DROP TABLE usage_charges;
DROP FUNCTION usage_charges_keep_billed();
ALTER TABLE invoices DROP CONSTRAINT invoices_id_currency;
