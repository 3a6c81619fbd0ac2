//! Pareto fronts: the points no other point beats on every objective.

/// Indices of the non-dominated points, where every objective is to be maximised. A point is
/// dominated when another is at least as good on all objectives and better on one. Runs in
/// O(n log n) for two objectives and O(n²) beyond.
pub fn front(points: &[Vec<f64>]) -> Vec<usize> {
    if points.is_empty() {
        return Vec::new();
    }
    if points[0].len() == 2 {
        // Sort by the first objective (descending, ties by the second descending) and keep the
        // points that raise the best second objective seen so far.
        let mut order: Vec<usize> = (0..points.len()).collect();
        order.sort_by(|&a, &b| {
            points[b][0]
                .total_cmp(&points[a][0])
                .then(points[b][1].total_cmp(&points[a][1]))
        });
        let mut best = f64::NEG_INFINITY;
        let mut out = Vec::new();
        for i in order {
            if points[i][1] > best {
                best = points[i][1];
                out.push(i);
            }
        }
        out.sort_unstable();
        return out;
    }
    let dominates = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).all(|(x, y)| x >= y) && a.iter().zip(b).any(|(x, y)| x > y)
    };
    (0..points.len())
        .filter(|&i| !points.iter().any(|p| dominates(p, &points[i])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::front;

    #[test]
    fn two_objectives_by_hand() {
        let pts = [
            [1.0, 5.0],
            [2.0, 4.0],
            [2.0, 3.0],
            [3.0, 1.0],
            [0.5, 5.0],
            [3.0, 1.0],
        ];
        let pts: Vec<Vec<f64>> = pts.iter().map(|p| p.to_vec()).collect();
        // [2,3] is dominated by [2,4]; [0.5,5] by [1,5]; the duplicate [3,1] keeps one copy.
        assert_eq!(front(&pts), vec![0, 1, 3]);
    }

    #[test]
    fn three_objectives_match_the_definition() {
        let pts = vec![
            vec![1.0, 1.0, 1.0],
            vec![2.0, 0.0, 1.0],
            vec![0.5, 0.5, 0.5],
            vec![1.0, 1.0, 2.0],
        ];
        assert_eq!(front(&pts), vec![1, 3]);
    }
}
