-- mlwaf demo application data. Plain-text passwords on purpose: this is a
-- deliberately vulnerable demo, never a pattern to follow.
DROP TABLE IF EXISTS users;
DROP TABLE IF EXISTS products;

CREATE TABLE users (
    id INTEGER PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password TEXT NOT NULL,
    role TEXT NOT NULL
);
INSERT INTO users (username, password, role) VALUES
    ('admin', 'Adm1n-demo-only', 'administrator'),
    ('alice', 'wonderland', 'customer'),
    ('bob', 'builder', 'customer');

CREATE TABLE products (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL,
    price_cents INTEGER NOT NULL
);
INSERT INTO products (name, description, price_cents) VALUES
    ('Espresso cup', 'Porcelain, 80 ml', 650),
    ('Coffee grinder', 'Hand grinder with ceramic burrs', 4900),
    ('Milk jug', 'Stainless steel, 350 ml', 1500),
    ('Filter papers', 'Pack of 100, size 4', 390),
    ('Kettle', 'Gooseneck kettle, 1 litre', 5900);
