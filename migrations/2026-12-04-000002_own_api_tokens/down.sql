DROP INDEX api_tokens_creator;
DELETE FROM membership_permissions WHERE permission = 'tokens.create_own';
DELETE FROM permissions WHERE name = 'tokens.create_own';
