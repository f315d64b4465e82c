//! Users: creation and its rules, the login check's input (`GetUser`), finding and listing,
//! changes (role, status, password) with their session revocation, and deletion.
