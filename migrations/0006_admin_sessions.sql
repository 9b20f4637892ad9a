-- Admin sign-ins still in force. The (encrypted) session cookie carries its row's id and every
-- admin request checks that the row is still here, so signing out deletes the row and the
-- cookie stops working at once, wherever it was saved; signing out everywhere deletes them all.
CREATE TABLE admin_sessions (
    id TEXT PRIMARY KEY,
    signed_in_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX admin_sessions_signed_in_at ON admin_sessions (signed_in_at);
