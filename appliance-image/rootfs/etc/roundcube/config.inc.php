<?php
// Moat appliance: Roundcube reads the mailboxes of this machine's Dovecot. Debian's defaults
// are in defaults.inc.php; the database is Debian's dbconfig SQLite file.
$config = [];
include("/etc/roundcube/debian-db-roundcube.php");

// IMAP over TLS to this machine; the certificate is its own, made at first boot.
$config['imap_host'] = ['ssl://localhost:993'];
$config['imap_conn_options'] = ['ssl' => ['verify_peer' => false, 'verify_peer_name' => false]];
// The appliance takes mail in; it sends none of its own (no submission service yet).
$config['smtp_host'] = '';
$config['username_domain'] = '';
$config['product_name'] = 'Moat Webmail';
$config['support_url'] = '';
$config['plugins'] = [];
$config['skin'] = 'elastic';
$config['enable_spellcheck'] = false;
$config['enable_installer'] = false;
$config['use_https'] = true;

// des_key, made at first boot by moat-firstboot: the image holds no secret.
include("/etc/roundcube/moat-secrets.inc.php");
