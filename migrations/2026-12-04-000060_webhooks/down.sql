DROP TABLE webhook_deliveries;
DROP TABLE webhook_redeliveries;
DROP TABLE webhook_endpoints;
DELETE FROM membership_permissions WHERE permission = 'webhooks.manage';
DELETE FROM permissions WHERE name = 'webhooks.manage';
