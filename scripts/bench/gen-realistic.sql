-- A realistic business database with high-entropy text (names, emails,
-- md5 strings, jsonb, timestamps) and several indexes. Scale with
-- psql -v scale=N (rows per table = scale * 100000).
\set customers :scale * 100000
\set orders :scale * 200000
\set events :scale * 300000

drop table if exists events, orders, customers;

create table customers (
    id         bigserial primary key,
    name       text not null,
    email      text not null,
    phone      text,
    address    jsonb,
    notes      text,
    created_at timestamptz not null
);
insert into customers (name, email, phone, address, notes, created_at)
select (array['Anna','Ben','Chen','Dara','Elif','Farid','Greta','Hugo','Ines','Jonas','Kemal','Lena'])[1 + (g % 12)]
         || ' ' || initcap(substr(md5(g::text || 'n'), 1, 9)),
       substr(md5(g::text || 'e'), 1, 14) || '@' || (array['example.com','mail.test','corp.example','shop.test'])[1 + (g % 4)],
       '+49 ' || (1000000000 + (hashtext(g::text) & 2147483647) % 8999999999)::text,
       jsonb_build_object('street', md5(g::text || 's'), 'zip', (hashtext(g::text || 'z') & 65535), 'city', substr(md5(g::text || 'c'), 1, 10)),
       md5(g::text || 'x') || ' ' || md5(g::text || 'y') || ' ' || md5(g::text || 'w'),
       timestamptz '2023-01-01' + (hashtext(g::text || 't') & 65535) * interval '7 minutes'
from generate_series(1, :customers) g;

create table orders (
    id          bigserial primary key,
    customer_id bigint not null,
    amount      numeric(12, 2) not null,
    status      text not null,
    payload     jsonb,
    created_at  timestamptz not null
);
insert into orders (customer_id, amount, status, payload, created_at)
select 1 + (hashtext(g::text) & 2147483647) % :customers,
       ((hashtext(g::text || 'a') & 1048575) / 100.0)::numeric(12, 2),
       (array['new','paid','shipped','cancelled','refunded'])[1 + (g % 5)],
       jsonb_build_object('sku', md5(g::text || 'k'), 'qty', g % 17, 'note', md5(g::text || 'o')),
       timestamptz '2023-01-01' + (hashtext(g::text || 'd') & 65535) * interval '11 minutes'
from generate_series(1, :orders) g;

create table events (
    id          bigserial primary key,
    customer_id bigint not null,
    kind        text not null,
    body        text not null,
    at          timestamptz not null
);
insert into events (customer_id, kind, body, at)
select 1 + (hashtext(g::text || 'c') & 2147483647) % :customers,
       (array['login','view','cart','checkout','support'])[1 + (g % 5)],
       md5(g::text || 'b1') || md5(g::text || 'b2') || md5(g::text || 'b3'),
       timestamptz '2023-01-01' + (hashtext(g::text || 'v') & 65535) * interval '13 minutes'
from generate_series(1, :events) g;

create index on customers (email);
create index on orders (customer_id);
create index on orders (created_at);
create index on events (customer_id);
create index on events (at);
analyze;
