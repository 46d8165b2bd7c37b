<?php
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

// A comment form whose rich-text editor sends HTML (inline styles, embedded
// videos). Its normal use trips the Core Rule Set's XSS rules and the model
// until the appliance is tuned to the site (mlwaf tune, playbooks/tune.yml).
$name = (string) ($_POST['name'] ?? '');
$comment = (string) ($_POST['comment'] ?? '');
page_header('Comments');
if ($_SERVER['REQUEST_METHOD'] === 'POST') {
    printf('<p id="received">Thanks %s: your comment (%d characters) awaits moderation.</p>',
        h($name), strlen($comment));
}
?>
<form method="post" action="comment.php">
  <p><label>Name <input name="name"></label></p>
  <p><label>Comment (the editor sends HTML)<br>
    <textarea name="comment" rows="6" cols="60"></textarea></label></p>
  <p><button type="submit">Post</button></p>
</form>
<?php
page_footer();
