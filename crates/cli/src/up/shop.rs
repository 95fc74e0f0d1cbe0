//! The demo's online shop: a product catalog, web visitors in sessions and mobile devices,
//! producing records that fit `raw.web_events`, `raw.mobile_events` and `files.products`.
//! A small share is deliberately wrong, so the dead-letter topics have something to show.

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value, json};

/// One product of the catalog.
#[derive(Debug, Clone)]
pub(crate) struct Product {
    pub(crate) id: String,
    pub(crate) sku: String,
    pub(crate) name: String,
    pub(crate) category: &'static str,
    /// Price in cents.
    pub(crate) price_cents: i64,
    pub(crate) in_stock: bool,
}

const CATEGORIES: [(&str, &[&str]); 6] = [
    (
        "shoes",
        &["Trail Runner", "City Sneaker", "Hiking Boot", "Sandal"],
    ),
    (
        "jackets",
        &["Rain Shell", "Down Parka", "Fleece", "Windbreaker"],
    ),
    ("bags", &["Daypack", "Tote", "Duffel", "Messenger Bag"]),
    (
        "accessories",
        &["Beanie", "Wool Socks", "Sunglasses", "Water Bottle"],
    ),
    ("home", &["Camping Mug", "Blanket", "Lantern", "Hammock"]),
    (
        "outdoor",
        &["Tent", "Sleeping Bag", "Trekking Poles", "Headlamp"],
    ),
];
const COLOURS: [&str; 6] = ["Black", "Forest", "Sand", "Navy", "Rust", "Slate"];
const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
];
const REFERRERS: [Option<&str>; 5] = [
    None,
    Some("https://www.google.com/search?q=outdoor+gear"),
    Some("https://www.instagram.com/"),
    Some("https://newsletter.shop.example/weekly"),
    Some("https://duckduckgo.com/"),
];
const SEARCHES: [&str; 5] = ["tent", "rain jacket", "wool socks", "boots", "gift"];
const SCREENS: [&str; 5] = ["home", "search", "product", "cart", "checkout"];
const BASE: &str = "https://shop.example";

/// Web visitors, mobile devices and products, with their current state.
#[derive(Debug)]
pub(crate) struct Shop {
    rng: StdRng,
    pub(crate) products: Vec<Product>,
    visitors: Vec<Visitor>,
    devices: Vec<Device>,
}

#[derive(Debug)]
struct Visitor {
    user_id: String,
    session: Option<String>,
    page: Option<String>,
    agent: &'static str,
}

#[derive(Debug)]
struct Device {
    id: String,
    user_id: Option<String>,
    platform: &'static str,
    version: &'static str,
}

impl Shop {
    /// The same products and people for every run (fixed seed); the events themselves vary.
    pub(crate) fn new() -> Self {
        let mut seeded = StdRng::seed_from_u64(20_261_128);
        let mut products = Vec::new();
        for (c, (category, kinds)) in CATEGORIES.iter().enumerate() {
            for (k, kind) in kinds.iter().enumerate() {
                for (v, colour) in COLOURS.iter().enumerate().take(5) {
                    let n = 1000 + c * 100 + k * 10 + v;
                    products.push(Product {
                        id: format!("P-{n}"),
                        sku: format!(
                            "{}-{n}-{}",
                            &category[..3].to_uppercase(),
                            &colour[..2].to_uppercase()
                        ),
                        name: format!("{kind} {colour}"),
                        category,
                        price_cents: seeded.random_range(8..250) * 100 + [0, 49, 90, 99][v % 4],
                        in_stock: seeded.random_bool(0.9),
                    });
                }
            }
        }
        let visitors = (1..=400)
            .map(|n| Visitor {
                // The shop database's customer number, so clean.web_events finds the customer.
                user_id: n.to_string(),
                session: None,
                page: None,
                agent: USER_AGENTS[seeded.random_range(0..USER_AGENTS.len())],
            })
            .collect();
        let devices = (0..200)
            .map(|n| Device {
                id: format!("d-{:08x}", seeded.random::<u32>()),
                user_id: seeded
                    .random_bool(0.7)
                    .then(|| (1 + (n * 7) % 400).to_string()),
                platform: if seeded.random_bool(0.55) {
                    "ios"
                } else {
                    "android"
                },
                version: ["5.4.0", "5.3.2", "5.3.1", "5.5.0-beta"][seeded.random_range(0..4)],
            })
            .collect();
        Self {
            rng: StdRng::from_os_rng(),
            products,
            visitors,
            devices,
        }
    }

    /// An index skewed towards the start: a few regulars make most of the traffic.
    fn skewed(&mut self, len: usize) -> usize {
        let x: f64 = self.rng.random();
        ((x * x * len as f64) as usize).min(len - 1)
    }

    fn product(&mut self) -> Product {
        let i = self.skewed(self.products.len());
        self.products[i].clone()
    }

    /// A web event at `at_ms`: page views, clicks, add-to-carts and purchases of one visitor's
    /// session. One in 200 has a `javascript:` URL, which transform's rule sends to
    /// `dlq.transform`.
    pub(crate) fn web_event(&mut self, at_ms: i64) -> Value {
        let i = self.skewed(self.visitors.len());
        let new_session = self.visitors[i].session.is_none() || self.rng.random_bool(0.08);
        let referrer = if new_session {
            self.visitors[i].session = Some(uuid::Uuid::new_v4().to_string());
            self.visitors[i].page = None;
            *REFERRERS.choose(&mut self.rng).unwrap_or(&None)
        } else {
            None
        };
        let product = self.product();
        let roll: f64 = self.rng.random();
        let (event_type, path, amount) = if roll < 0.55 {
            let path = match self.rng.random_range(0..4) {
                0 => "/".to_string(),
                1 => format!("/category/{}", product.category),
                2 => format!(
                    "/search?q={}",
                    SEARCHES[self.rng.random_range(0..SEARCHES.len())].replace(' ', "+")
                ),
                _ => format!("/product/{}", product.id),
            };
            ("page_view", path, None)
        } else if roll < 0.80 {
            ("click", format!("/product/{}", product.id), None)
        } else if roll < 0.93 {
            ("add_to_cart", format!("/product/{}", product.id), None)
        } else if roll < 0.98 {
            let quantity = self.rng.random_range(1..=3);
            (
                "purchase",
                "/checkout/complete".to_string(),
                Some(product.price_cents * quantity),
            )
        } else {
            ("other", "/account".to_string(), None)
        };
        let url = if self.rng.random_ratio(1, 200) {
            "javascript:void(0)".to_string()
        } else {
            format!("{BASE}{path}")
        };
        let visitor = &mut self.visitors[i];
        let previous = visitor.page.replace(url.clone());
        let mut properties = Map::new();
        if path.contains(&product.id) || amount.is_some() {
            properties.insert("product_id".into(), json!(product.id));
        }
        if let Some(r) = referrer.filter(|r| r.contains("newsletter")) {
            properties.insert(
                "campaign".into(),
                json!(r.rsplit('/').next().unwrap_or("newsletter")),
            );
        }
        json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "user_id": visitor.user_id,
            "session_id": visitor.session,
            "event_type": event_type,
            "occurred_at": at_ms,
            "page": {"url": url, "referrer": referrer.map(str::to_string).or(previous)},
            "user_agent": visitor.agent,
            "amount": amount.map(cents),
            "properties": properties,
        })
    }

    /// A mobile app event at `at_ms`.
    pub(crate) fn mobile_event(&mut self, at_ms: i64) -> Value {
        let i = self.skewed(self.devices.len());
        let product = self.product();
        let roll: f64 = self.rng.random();
        let (name, screen, duration) = if roll < 0.15 {
            ("app_open", "home", None)
        } else if roll < 0.75 {
            let screen = SCREENS[self.rng.random_range(0..SCREENS.len())];
            (
                "screen_view",
                screen,
                Some(self.rng.random_range(300..90_000)),
            )
        } else if roll < 0.88 {
            ("add_to_cart", "product", None)
        } else if roll < 0.93 {
            ("purchase", "checkout", None)
        } else {
            ("push_opened", "home", None)
        };
        let device = &self.devices[i];
        let mut properties = Map::new();
        if matches!(screen, "product" | "checkout") {
            properties.insert("product_id".into(), json!(product.id));
        }
        json!({
            "event_id": uuid::Uuid::new_v4().to_string(),
            "device_id": device.id,
            "user_id": device.user_id,
            "platform": device.platform,
            "app_version": device.version,
            "event_name": name,
            "occurred_at": at_ms,
            "screen": screen,
            "duration_ms": duration,
            "properties": properties,
        })
    }

    /// `n` products with a changed price or stock (the catalog's next update).
    pub(crate) fn product_updates(&mut self, n: usize) -> Vec<Product> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let i = self.rng.random_range(0..self.products.len());
            let p = &mut self.products[i];
            if self.rng.random_bool(0.7) {
                let change = self.rng.random_range(-10..=10);
                p.price_cents = (p.price_cents * (100 + change) / 100).max(99);
            } else {
                p.in_stock = !p.in_stock;
            }
            out.push(p.clone());
        }
        out
    }
}

/// Cents as a decimal text, `1999` -> `"19.99"`.
pub(crate) fn cents(n: i64) -> String {
    format!("{}.{:02}", n / 100, n % 100)
}

/// A product file: CSV (with a header) or NDJSON, `updated_at` in RFC 3339. With `bad_row`, one
/// extra row has a price that is not a number, which ingest sends to `dlq.ingest` by line.
pub(crate) fn products_file(
    products: &[Product],
    updated_at: &str,
    csv: bool,
    bad_row: bool,
) -> String {
    let mut rows: Vec<(String, String, String, String, String, bool)> = products
        .iter()
        .map(|p| {
            (
                p.id.clone(),
                p.sku.clone(),
                p.name.clone(),
                p.category.to_string(),
                cents(p.price_cents),
                p.in_stock,
            )
        })
        .collect();
    if bad_row && let Some(p) = products.first() {
        rows.push((
            p.id.clone(),
            p.sku.clone(),
            p.name.clone(),
            p.category.to_string(),
            "call us".into(),
            p.in_stock,
        ));
    }
    let mut out = String::new();
    if csv {
        out.push_str("product_id,sku,name,category,price,currency,in_stock,updated_at\n");
        for (id, sku, name, category, price, in_stock) in rows {
            out.push_str(&format!(
                "{},{},{},{},{},EUR,{in_stock},{updated_at}\n",
                csv_field(&id),
                csv_field(&sku),
                csv_field(&name),
                csv_field(&category),
                csv_field(&price)
            ));
        }
    } else {
        for (id, sku, name, category, price, in_stock) in rows {
            let line = json!({
                "product_id": id, "sku": sku, "name": name, "category": category,
                "price": price, "currency": "EUR", "in_stock": in_stock, "updated_at": updated_at,
            });
            out.push_str(&line.to_string());
            out.push('\n');
        }
    }
    out
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use apache_avro::Schema;
    use tributary_core::schema::json::json_to_avro_datum;

    fn schema(topic: &str) -> Schema {
        let path = format!(
            "{}/../../schemas/{topic}-value.avsc",
            env!("CARGO_MANIFEST_DIR")
        );
        Schema::parse_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn events_fit_their_schemas() {
        let mut shop = Shop::new();
        let web = schema("raw.web_events");
        let mobile = schema("raw.mobile_events");
        let mut purchases = 0;
        for i in 0..2000 {
            let event = shop.web_event(1_764_000_000_000 + i);
            purchases += usize::from(event["event_type"] == "purchase");
            json_to_avro_datum(&event, &web).unwrap_or_else(|e| panic!("{event}: {e}"));
            let event = shop.mobile_event(1_764_000_000_000 + i);
            json_to_avro_datum(&event, &mobile).unwrap_or_else(|e| panic!("{event}: {e}"));
        }
        assert!(purchases > 20, "{purchases}");
    }

    #[test]
    fn the_catalog_is_stable_and_files_have_every_column() {
        let a = Shop::new();
        let b = Shop::new();
        assert_eq!(a.products.len(), 120);
        assert_eq!(a.products[7].id, b.products[7].id);
        assert_eq!(a.products[7].price_cents, b.products[7].price_cents);
        let csv = products_file(&a.products[..2], "2026-11-28T10:00:00Z", true, true);
        assert_eq!(csv.lines().count(), 4, "{csv}");
        assert!(csv.lines().last().unwrap().contains(",call us,"), "{csv}");
        let ndjson = products_file(&a.products[..2], "2026-11-28T10:00:00Z", false, false);
        let first: Value = serde_json::from_str(ndjson.lines().next().unwrap()).unwrap();
        assert_eq!(first["currency"], "EUR");
        assert_eq!(cents(1999), "19.99");
        assert_eq!(cents(500), "5.00");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
    }
}
