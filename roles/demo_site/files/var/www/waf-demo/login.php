<?php
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

$result = null;
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    $username = (string) ($_POST['username'] ?? '');
    $password = (string) ($_POST['password'] ?? '');
    // DELIBERATELY VULNERABLE: the form fields are pasted into the SQL text.
    $sql = "SELECT username, role FROM users WHERE username = '" . $username
        . "' AND password = '" . $password . "'";
    try {
        $row = demo_db()->query($sql)->fetchArray(SQLITE3_ASSOC);
        $result = $row === false
            ? ['class' => 'error', 'text' => 'Invalid username or password.']
            : ['class' => 'ok', 'text' => 'Welcome, ' . $row['username'] . ' (' . $row['role'] . ').'];
    } catch (Exception $e) {
        $result = ['class' => 'error', 'text' => 'Database error: ' . $e->getMessage()];
    }
}

page_header('Login');
if ($result !== null) {
    echo '<p class="' . $result['class'] . '" id="result">' . h($result['text']) . '</p>';
}
?>
<form method="post" action="login.php">
  <p><label>Username <input name="username" autocomplete="username"></label></p>
  <p><label>Password <input name="password" type="password" autocomplete="current-password"></label></p>
  <p><button type="submit">Log in</button></p>
</form>
<?php
page_footer();
