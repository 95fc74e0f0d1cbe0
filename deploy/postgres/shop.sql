-- The demo shop database that the catalog's `shop_db` source captures (docs/ingest.md,
-- "PostgreSQL sources"). Columns match schemas/db.shop.customers-value.avsc and
-- schemas/db.shop.orders-value.avsc. Run once in the `shop` database:
--   createdb shop && psql -d shop -f deploy/postgres/shop.sql
CREATE SCHEMA IF NOT EXISTS shop;

CREATE TABLE IF NOT EXISTS shop.customers (
    customer_id bigint PRIMARY KEY,
    email text NOT NULL,
    full_name text NOT NULL,
    country text NOT NULL,
    segment text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS shop.orders (
    order_id bigint PRIMARY KEY,
    customer_id bigint NOT NULL REFERENCES shop.customers,
    status text NOT NULL,
    total numeric(12, 2) NOT NULL,
    currency text NOT NULL,
    ordered_at timestamptz NOT NULL DEFAULT now()
);

-- Whole old rows in `before` for updates and deletes.
ALTER TABLE shop.customers REPLICA IDENTITY FULL;
ALTER TABLE shop.orders REPLICA IDENTITY FULL;
