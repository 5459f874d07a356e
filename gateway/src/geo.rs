//! Where an alert applies, as CAP draws it: polygons and circles in
//! WGS 84 latitude and longitude. A village is addressed when its
//! configured point lies inside (or on the edge of) any shape.

/// A point: latitude, longitude (degrees).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Shape {
    /// A closed ring (first point equals last).
    Polygon(Vec<Point>),
    /// A centre and a radius in kilometres.
    Circle { centre: Point, radius_km: f64 },
}

/// Mean earth radius, km (IUGG), for distances on the sphere.
const EARTH_RADIUS_KM: f64 = 6_371.008_8;

impl Point {
    /// Great-circle distance to `other`, km (haversine).
    pub fn distance_km(self, other: Point) -> f64 {
        let (la1, la2) = (self.lat.to_radians(), other.lat.to_radians());
        let dlat = la2 - la1;
        let dlon = (other.lon - self.lon).to_radians();
        let a = (dlat / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlon / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_KM * a.sqrt().min(1.0).asin()
    }
}

impl Shape {
    pub fn contains(&self, p: Point) -> bool {
        match self {
            Shape::Circle { centre, radius_km } => centre.distance_km(p) <= *radius_km,
            Shape::Polygon(ring) => in_ring(ring, p),
        }
    }
}

/// Even-odd rule on the plane of latitude and longitude (what CAP
/// consumers do; districts are far from the poles and the date line),
/// with a point on an edge counted inside.
fn in_ring(ring: &[Point], p: Point) -> bool {
    let mut inside = false;
    for w in ring.windows(2) {
        let (a, b) = (w[0], w[1]);
        if on_segment(a, b, p) {
            return true;
        }
        if (a.lat > p.lat) != (b.lat > p.lat) {
            let lon_at = a.lon + (p.lat - a.lat) / (b.lat - a.lat) * (b.lon - a.lon);
            if p.lon < lon_at {
                inside = !inside;
            }
        }
    }
    inside
}

fn on_segment(a: Point, b: Point, p: Point) -> bool {
    const EPS: f64 = 1e-9;
    let cross = (b.lon - a.lon) * (p.lat - a.lat) - (b.lat - a.lat) * (p.lon - a.lon);
    cross.abs() < EPS
        && p.lat >= a.lat.min(b.lat) - EPS
        && p.lat <= a.lat.max(b.lat) + EPS
        && p.lon >= a.lon.min(b.lon) - EPS
        && p.lon <= a.lon.max(b.lon) + EPS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(lat: f64, lon: f64) -> Point {
        Point { lat, lon }
    }

    #[test]
    fn a_polygon_holds_what_lies_inside_it() {
        // A concave "L" around Nanchang's east: the notch is outside.
        let l = Shape::Polygon(vec![
            pt(28.0, 115.0),
            pt(28.0, 116.0),
            pt(28.5, 116.0),
            pt(28.5, 115.5),
            pt(29.0, 115.5),
            pt(29.0, 115.0),
            pt(28.0, 115.0),
        ]);
        assert!(l.contains(pt(28.2, 115.8)));
        assert!(l.contains(pt(28.8, 115.2)));
        assert!(!l.contains(pt(28.8, 115.8)), "the notch");
        assert!(!l.contains(pt(27.9, 115.5)));
        assert!(l.contains(pt(28.0, 115.5)), "on an edge");
        assert!(l.contains(pt(29.0, 115.0)), "a corner");
    }

    #[test]
    fn a_circle_measures_on_the_sphere() {
        let c = Shape::Circle {
            centre: pt(28.68, 115.86),
            radius_km: 10.0,
        };
        // 0.08° of latitude is about 8.9 km; 0.1° about 11.1 km.
        assert!(c.contains(pt(28.76, 115.86)));
        assert!(!c.contains(pt(28.78, 115.86)));
        let d = pt(0.0, 0.0).distance_km(pt(0.0, 1.0));
        assert!((d - 111.195).abs() < 0.01, "{d}");
    }
}
