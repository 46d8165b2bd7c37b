<?php
// Product search as a JSON API: POST {"q": "...", "limit": 10} (or GET ?q=).
// Parameterised and escaped: the benchmark's JSON call, not a vulnerability.
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

header('Content-Type: application/json');
$input = $_GET;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $input = json_decode((string) file_get_contents('php://input'), true);
    if (!is_array($input)) {
        http_response_code(400);
        echo json_encode(['error' => 'the body must be a JSON object']);
        exit;
    }
}
$q = is_string($input['q'] ?? null) ? $input['q'] : '';
$limit = max(1, min(50, (int) ($input['limit'] ?? 10)));
$stmt = demo_db()->prepare('SELECT name, price_cents FROM products '
    . 'WHERE name LIKE :q OR description LIKE :q ORDER BY name LIMIT :limit');
$stmt->bindValue(':q', '%' . $q . '%', SQLITE3_TEXT);
$stmt->bindValue(':limit', $limit, SQLITE3_INTEGER);
$rows = $stmt->execute();
$products = [];
while (($row = $rows->fetchArray(SQLITE3_ASSOC)) !== false) {
    $products[] = ['name' => $row['name'], 'price' => $row['price_cents'] / 100];
}
echo json_encode(['query' => $q, 'products' => $products]);
