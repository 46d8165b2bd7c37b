<?php
// Shared helpers of the mlwaf demo application.
declare(strict_types=1);

require __DIR__ . '/config.php';

function h(string $text): string
{
    return htmlspecialchars($text, ENT_QUOTES | ENT_SUBSTITUTE, 'UTF-8');
}

function demo_db(): SQLite3
{
    $db = new SQLite3(DEMO_DB_PATH, SQLITE3_OPEN_READONLY);
    $db->enableExceptions(true);
    return $db;
}

function page_header(string $title): void
{
    header('Content-Type: text/html; charset=utf-8');
    echo '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">';
    echo '<title>' . h($title) . ' - mlwaf demo</title>';
    echo '<link rel="stylesheet" href="style.css"></head><body>';
    echo '<div class="banner">DEMO APPLICATION - deliberately vulnerable (SQL injection, XSS). ';
    echo 'It exists to show the WAF at work. Never expose it without the WAF in front.</div>';
    echo '<nav><a href="index.php">Home</a> <a href="login.php">Login</a> ';
    echo '<a href="search.php">Search</a> <a href="comment.php">Comments</a> ';
    echo '<a href="test.php">Attack simulation</a></nav>';
    echo '<main><h1>' . h($title) . '</h1>';
}

function page_footer(): void
{
    echo '</main></body></html>';
}
