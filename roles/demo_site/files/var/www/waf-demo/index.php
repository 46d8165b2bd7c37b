<?php
declare(strict_types=1);
require __DIR__ . '/lib/common.php';

page_header('mlwaf demo shop');
?>
<p>This small shop runs behind the mlwaf web application firewall (Apache,
ModSecurity with the OWASP Core Rule Set, and the mlwaf analyzer).</p>
<ul>
  <li><a href="login.php">Login</a>: the SQL query is built by pasting the form
    fields into it, so <code>admin' OR '1'='1' -- </code> logs in without a password.</li>
  <li><a href="search.php?q=grinder">Search</a>: the search term is echoed back
    unescaped, a reflected cross-site scripting hole.</li>
  <li><a href="test.php">Attack simulation</a>: fires sample attacks at this site
    and shows which ones the WAF stopped.</li>
</ul>
<?php
page_footer();
