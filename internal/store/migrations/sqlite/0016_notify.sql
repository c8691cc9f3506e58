-- Email notifications: the admins and helpdesk people asked to approve a key request are found
-- by their role, not by reading every user.
CREATE INDEX users_by_role ON users (role, email_key);
