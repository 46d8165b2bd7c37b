<?php
// Attack simulation: fires sample attacks at the site through the WAF's front
// door (DEMO_BASE_URL) and reports, for each, the answer and whether the WAF
// stopped it. ?format=json gives the same report for scripts.
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

const ATTACKS = [
    ['name' => 'Benign search', 'family' => 'benign', 'method' => 'GET',
        'path' => 'search.php?q=grinder', 'body' => null, 'works_if' => 'Coffee grinder'],
    ['name' => 'Benign login', 'family' => 'benign', 'method' => 'POST',
        'path' => 'login.php', 'body' => ['username' => 'alice', 'password' => 'wonderland'],
        'works_if' => 'Welcome, alice'],
    ['name' => 'SQL injection login bypass', 'family' => 'sqli', 'method' => 'POST',
        'path' => 'login.php', 'body' => ['username' => "admin' OR '1'='1' -- ", 'password' => 'x'],
        'works_if' => 'Welcome, admin'],
    ['name' => 'SQL injection UNION', 'family' => 'sqli', 'method' => 'GET',
        'path' => "search.php?q=%27%20UNION%20SELECT%20username%2C%20password%2C%20role%20FROM%20users--",
        'body' => null, 'works_if' => null],
    ['name' => 'Reflected XSS', 'family' => 'xss', 'method' => 'GET',
        'path' => 'search.php?q=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E', 'body' => null,
        'works_if' => '<script>alert(document.cookie)</script>'],
    ['name' => 'Path traversal', 'family' => 'traversal', 'method' => 'GET',
        'path' => 'index.php?file=..%2F..%2F..%2F..%2Fetc%2Fpasswd', 'body' => null, 'works_if' => null],
    ['name' => 'OS command injection', 'family' => 'cmdi', 'method' => 'GET',
        'path' => 'search.php?q=%3Bcat%20%2Fetc%2Fpasswd', 'body' => null, 'works_if' => null],
];

function fire(string $method, string $path, ?array $body): array
{
    $ch = curl_init(rtrim(DEMO_BASE_URL, '/') . '/' . $path);
    curl_setopt_array($ch, [
        CURLOPT_RETURNTRANSFER => true,
        CURLOPT_TIMEOUT => 10,
        CURLOPT_USERAGENT => 'mlwaf-demo-attack-simulation/1.0',
        CURLOPT_SSL_VERIFYPEER => false,  // the demo host uses a self-signed certificate
        CURLOPT_SSL_VERIFYHOST => 0,
    ]);
    if ($method === 'POST') {
        curl_setopt($ch, CURLOPT_POSTFIELDS, http_build_query($body ?? []));
    }
    $text = curl_exec($ch);
    $status = (int) curl_getinfo($ch, CURLINFO_RESPONSE_CODE);
    $error = curl_error($ch);
    curl_close($ch);
    return ['status' => $status, 'body' => is_string($text) ? $text : '', 'error' => $error];
}

$report = ['base_url' => DEMO_BASE_URL, 'attacks' => [], 'burst' => []];
foreach (ATTACKS as $attack) {
    $answer = fire($attack['method'], $attack['path'], $attack['body']);
    $report['attacks'][] = [
        'name' => $attack['name'],
        'family' => $attack['family'],
        'status' => $answer['status'],
        'blocked' => in_array($answer['status'], [403, 429], true),
        'worked' => $attack['works_if'] !== null && str_contains($answer['body'], $attack['works_if']),
        'error' => $answer['error'],
    ];
}
$started = microtime(true);
for ($i = 0; $i < DEMO_BURST_REQUESTS; $i++) {
    $status = (string) fire('GET', 'index.php', null)['status'];
    $report['burst'][$status] = ($report['burst'][$status] ?? 0) + 1;
}
$report['burst_seconds'] = round(microtime(true) - $started, 3);

if (($_GET['format'] ?? '') === 'json') {
    header('Content-Type: application/json');
    echo json_encode($report, JSON_PRETTY_PRINT | JSON_UNESCAPED_SLASHES), "\n";
    exit;
}

page_header('Attack simulation');
echo '<p>Target: <code>' . h(DEMO_BASE_URL) . '</code></p>';
echo '<table><tr><th>Request</th><th>Family</th><th>HTTP status</th><th>WAF</th><th>Reached the app</th></tr>';
foreach ($report['attacks'] as $row) {
    $verdict = $row['blocked'] ? '<span class="blocked">blocked</span>' : '<span class="passed">passed</span>';
    printf('<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>', h($row['name']),
        h($row['family']), $row['status'] ?: h($row['error']), $verdict, $row['worked'] ? 'yes, it worked' : 'no');
}
echo '</table><h2>Burst</h2><p>' . DEMO_BURST_REQUESTS . ' requests in ' . $report['burst_seconds'] . ' s: ';
foreach ($report['burst'] as $status => $count) {
    echo h((string) $status) . ' &times; ' . $count . ' ';
}
echo '</p>';
page_footer();
