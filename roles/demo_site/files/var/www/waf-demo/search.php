<?php
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

$q = (string) ($_GET['q'] ?? '');
page_header('Search');
?>
<form method="get" action="search.php">
  <p><input name="q" value="<?= h($q) ?>"> <button type="submit">Search</button></p>
</form>
<?php
if ($q !== '') {
    // DELIBERATELY VULNERABLE: the search term is echoed back unescaped.
    echo '<p id="term">Results for: ' . $q . '</p>';
    // The query itself is parameterised; only the echo above is unsafe.
    $stmt = demo_db()->prepare('SELECT name, description, price_cents FROM products '
        . "WHERE name LIKE :q OR description LIKE :q ORDER BY name");
    $stmt->bindValue(':q', '%' . $q . '%', SQLITE3_TEXT);
    $rows = $stmt->execute();
    echo '<table><tr><th>Product</th><th>Description</th><th>Price</th></tr>';
    while (($row = $rows->fetchArray(SQLITE3_ASSOC)) !== false) {
        printf('<tr><td>%s</td><td>%s</td><td>%.2f EUR</td></tr>', h($row['name']),
            h($row['description']), $row['price_cents'] / 100);
    }
    echo '</table>';
}
page_footer();
