//! The session manager's administration: operator accounts (disable, remove, reset),
//! invitation links (current, reissue, revoke), bans by identity, and the audit log that
//! records them with logins and moderation.

use super::SessionManager;
use crate::access::{new_link_id, AuditEntry, AuditRecord, Ban, InvitationLink, OperatorInfo};
use crate::auth;
use crate::error::{Result, SessionError};
use crate::model::{site_identity, RakorState};
use crate::store::Operator;

/// Who did something, for the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub operator: String,
    pub address: String,
}

impl SessionManager {
    // ---- audit log ------------------------------------------------------------------------

    /// Append to the audit log. A storage failure is logged, never returned: the action it
    /// records has happened already.
    pub async fn audit(&self, entry: AuditEntry) {
        if let Err(e) = self.store.append_audit(crate::wib::now_ms(), &entry).await {
            tracing::error!(action = entry.action, "cannot write the audit log: {e}");
        }
    }

    /// Record an action of an operator.
    pub async fn audit_by(
        &self,
        actor: &Actor,
        action: &'static str,
        target: String,
        detail: String,
    ) {
        self.audit(AuditEntry {
            actor: actor.operator.clone(),
            address: actor.address.clone(),
            action,
            target,
            detail,
        })
        .await;
    }

    pub(super) async fn audit_login(
        &self,
        username: &str,
        client: &str,
        action: &'static str,
        detail: &str,
    ) {
        self.audit(AuditEntry {
            actor: username.to_owned(),
            address: client.to_owned(),
            action,
            target: String::new(),
            detail: detail.to_owned(),
        })
        .await;
    }

    /// The audit log, newest first.
    pub async fn audit_log(&self, limit: i64, before: Option<i64>) -> Result<Vec<AuditRecord>> {
        self.store.audit(limit, before).await
    }

    // ---- operators --------------------------------------------------------------------------

    pub async fn list_operators(&self) -> Result<Vec<OperatorInfo>> {
        self.store.list_operators().await
    }

    async fn operator_info(&self, id: i64) -> Result<OperatorInfo> {
        self.store
            .list_operators()
            .await?
            .into_iter()
            .find(|o| o.id == id)
            .ok_or_else(|| SessionError::not_found("operator", id))
    }

    /// Disable (or enable) an operator: a disabled one cannot log in, and its logins and API
    /// tokens stop working at once. Nobody disables themselves (the console would lock out).
    pub async fn set_operator_disabled(
        &self,
        by: &Operator,
        actor: &Actor,
        id: i64,
        disabled: bool,
    ) -> Result<OperatorInfo> {
        if by.id == id && disabled {
            return Err(SessionError::Conflict(
                "you cannot disable your own account".into(),
            ));
        }
        let op = self.operator_info(id).await?;
        self.store.set_operator_disabled(id, disabled).await?;
        if disabled {
            self.store.end_operator_sessions(id).await?;
        }
        let action = if disabled {
            "operator_disable"
        } else {
            "operator_enable"
        };
        self.audit_by(
            actor,
            action,
            format!("operator {}", op.username),
            String::new(),
        )
        .await;
        self.operator_info(id).await
    }

    /// Remove an operator (its logins and API tokens go with it).
    pub async fn remove_operator(&self, by: &Operator, actor: &Actor, id: i64) -> Result<()> {
        if by.id == id {
            return Err(SessionError::Conflict(
                "you cannot remove your own account".into(),
            ));
        }
        let op = self.operator_info(id).await?;
        self.store.delete_operator(id).await?;
        self.audit_by(
            actor,
            "operator_remove",
            format!("operator {}", op.username),
            String::new(),
        )
        .await;
        Ok(())
    }

    /// Create an operator from the console/API.
    pub async fn create_operator(
        &self,
        actor: &Actor,
        username: &str,
        password: &str,
    ) -> Result<Operator> {
        let op = self.add_operator(username, password, false).await?;
        self.audit_by(
            actor,
            "operator_add",
            format!("operator {}", op.username),
            String::new(),
        )
        .await;
        Ok(op)
    }

    /// Set an operator's password: every login and API token of the account ends.
    pub async fn reset_password(&self, actor: &Actor, id: i64, password: &str) -> Result<()> {
        let op = self.operator_info(id).await?;
        self.add_operator(&op.username, password, true).await?;
        self.audit_by(
            actor,
            "operator_password",
            format!("operator {}", op.username),
            "password set; logins and API tokens ended".into(),
        )
        .await;
        Ok(())
    }

    // ---- invitation links -------------------------------------------------------------------

    /// The current link of every site of a rakor (host first, then the invited sites): the
    /// newest link of each site, created if the site has none yet. A revoked newest link is
    /// returned revoked (the site has no working link until it is reissued).
    pub async fn current_links(&self, rakor_id: i64) -> Result<Vec<InvitationLink>> {
        let rakor = self.rakor(rakor_id).await?;
        let all = self.store.links(rakor_id).await?;
        let mut sites = vec![rakor.host_site_id];
        sites.extend(
            rakor
                .invited
                .iter()
                .copied()
                .filter(|s| *s != rakor.host_site_id),
        );
        let mut out = Vec::with_capacity(sites.len());
        for site in sites {
            match all.iter().rfind(|l| l.site_id == site) {
                Some(l) => out.push(l.clone()),
                None => out.push(self.new_link(rakor_id, site).await?),
            }
        }
        Ok(out)
    }

    async fn new_link(&self, rakor_id: i64, site_id: i64) -> Result<InvitationLink> {
        let link = InvitationLink {
            id: new_link_id(),
            rakor_id,
            site_id,
            created_at: crate::wib::now(),
            revoked_at: None,
        };
        self.store.insert_link(&link).await?;
        Ok(link)
    }

    async fn invited_site(&self, rakor_id: i64, site_id: i64) -> Result<()> {
        let r = self.rakor(rakor_id).await?;
        if r.state_at(crate::wib::now()) == RakorState::Ended {
            return Err(SessionError::Conflict("this rakor has ended".into()));
        }
        if site_id != r.host_site_id && !r.invited.contains(&site_id) {
            return Err(SessionError::not_found("invitation of site", site_id));
        }
        Ok(())
    }

    /// Revoke every live link of an invited site and forget its admissions; how many links.
    async fn withdraw_links(&self, rakor_id: i64, site_id: i64) -> Result<u64> {
        self.invited_site(rakor_id, site_id).await?;
        let revoked = self
            .store
            .revoke_links(rakor_id, site_id, crate::wib::now())
            .await?;
        self.store
            .revoke_admission(rakor_id, &site_identity(site_id))
            .await?;
        Ok(revoked)
    }

    /// Revoke a site's link and make a new one; the old link admits nobody, and the new one
    /// waits in the lobby again.
    pub async fn reissue_link(
        &self,
        actor: &Actor,
        rakor_id: i64,
        site_id: i64,
    ) -> Result<InvitationLink> {
        let revoked = self.withdraw_links(rakor_id, site_id).await?;
        let link = self.new_link(rakor_id, site_id).await?;
        self.audit_by(
            actor,
            "link_reissue",
            format!("rakor {rakor_id} {}", site_identity(site_id)),
            format!("{revoked} link(s) revoked, new link {}", link.id),
        )
        .await;
        Ok(link)
    }

    /// Revoke a site's link without a new one.
    pub async fn revoke_link(&self, actor: &Actor, rakor_id: i64, site_id: i64) -> Result<u64> {
        self.invited_site(rakor_id, site_id).await?;
        // Make sure there is a link record to revoke (a site whose link was never fetched).
        self.current_links(rakor_id).await?;
        let revoked = self.withdraw_links(rakor_id, site_id).await?;
        self.audit_by(
            actor,
            "link_revoke",
            format!("rakor {rakor_id} {}", site_identity(site_id)),
            format!("{revoked} link(s) revoked"),
        )
        .await;
        Ok(revoked)
    }

    // ---- bans -------------------------------------------------------------------------------

    /// Refuse `identity` in `room` from now on, whatever its token.
    pub async fn ban(&self, actor: &Actor, room: &str, identity: &str) -> Result<Ban> {
        let room = room.trim();
        let identity = identity.trim();
        for (field, v) in [("room", room), ("identity", identity)] {
            if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
                return Err(SessionError::invalid(
                    field,
                    "must be 1-128 bytes without control characters",
                ));
            }
        }
        let ban = self.store.add_ban(room, identity, &actor.operator).await?;
        self.audit_by(
            actor,
            "ban_add",
            format!("room {room} {identity}"),
            String::new(),
        )
        .await;
        Ok(ban)
    }

    pub async fn unban(&self, actor: &Actor, id: i64) -> Result<()> {
        let ban = self
            .store
            .remove_ban(id)
            .await?
            .ok_or_else(|| SessionError::not_found("ban", id))?;
        self.audit_by(
            actor,
            "ban_remove",
            format!("room {} {}", ban.room, ban.identity),
            String::new(),
        )
        .await;
        Ok(())
    }

    pub async fn bans(&self) -> Result<Vec<Ban>> {
        self.store.list_bans().await
    }

    /// A hash of a new password on the pool (for callers outside the manager).
    pub async fn hash_new_password(&self, password: &str) -> Result<String> {
        auth::check_new_password(password)?;
        let pw = password.to_owned();
        self.hashes.run(move || auth::hash_password(&pw)).await?
    }
}
